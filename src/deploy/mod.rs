//! Putting the agent on a box: `install`/`uninstall` (binary, units, files, checked
//! before enabling), `enrol` (secret and QR code for the phone, or its URI in a file for
//! a fleet), `check` (`visudo -c` for the agent) and `starter` (the safe starter config).

mod check;
mod enrol;
mod install;
mod starter;

pub(crate) use self::check::check;
pub(crate) use self::enrol::{
    Enrolment, Label, init, print_enrolment, show_uri_file, write_config,
};
pub(crate) use self::install::{
    Options as InstallOptions, install, restart_for_new_secret, uninstall,
};
pub(crate) use self::starter::{StarterPaths, starter_config};
