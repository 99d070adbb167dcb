//! Configuration in two stages, as ripgrep does flags: `raw` turns JSON into plain data
//! (no I/O; unknown keys and wrong types are errors naming their key path), then
//! `validate` checks ranges, paths, programs, users and groups and reports every problem
//! at once (what `sudo-agent check` prints). `load` reads the file through the
//! trusted-file checks and runs both; `types` is what the rest of the agent reads.

mod load;
mod problems;
mod raw;
mod types;
mod validate;

#[cfg(test)]
mod access_tests;
#[cfg(test)]
mod contain_tests;
#[cfg(test)]
mod tests;

pub use self::raw::parse;
pub use self::types::Config;

pub(crate) use self::load::ConfigError;
pub(crate) use self::problems::program_problem;
pub(crate) use self::raw::{
    RawArg, RawExamples, RawJobs, RawKind, RawResults, RawRule, RawThrottle, RawTotp,
    default_log_file, default_secret_file, default_state_dir,
};
pub(crate) use self::types::{
    DEFAULT_CONFIG_PATH, DEFAULT_LISTEN, JobsConfig, ResultsConfig, ThrottleConfig,
    UnixSocketConfig,
};
