//! Reading the config file: the trusted-file checks, then `parse`, then `validate`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::raw::{Problem, parse};
use super::types::Config;
use crate::sys::files::{self, FileError, Trust};

impl Config {
    /// Reads the config file through the trusted-file checks (owner, mode, no links),
    /// parses and validates it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_in_root(path, Path::new("/"))
    }

    /// `load`, with the files the config names (secret, log, state, results) taken as
    /// relative to `root`: how `install --root DIR` checks a tree that is not yet the
    /// live system. The returned paths are the ones under `root`.
    pub fn load_in_root(path: &Path, root: &Path) -> Result<Config, ConfigError> {
        let text = files::read_trusted("config file", path, Trust::NotWritableByOthers)
            .map_err(ConfigError::File)?;
        let invalid = |problems| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        };
        let mut raw = parse(&text).map_err(|problem| invalid(vec![problem]))?;
        raw.rebase(root);
        Config::validate(raw).map_err(invalid)
    }
}

/// Why the config could not be loaded.
#[derive(Debug)]
pub enum ConfigError {
    File(FileError),
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(err) => err.fmt(f),
            Self::Invalid { path, problems } => {
                write!(f, "config file {} is invalid:", path.display())?;
                for problem in problems {
                    write!(f, "\n  - {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::File(err) => Some(err),
            Self::Invalid { .. } => None,
        }
    }
}
