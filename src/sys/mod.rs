//! The operating system, behind plain Rust functions: every libc call and every
//! `unsafe` block of the crate lives in this folder (the compiler holds the rest of the
//! crate to `deny(unsafe_code)`), each block with its `// SAFETY:` reason and each `-1`
//! turned into an `io::Error` by [`cerr`](cerr::cerr). Also here: the one place that
//! opens files the agent trusts (`files`), the trust chain of the programs and
//! directories it runs (`chain`), the clock, systemd's interfaces, and what contains a
//! job: its cgroup (`cgroup`) and its sandbox (`sandbox`, from `mounts`).

mod cerr;
mod cgroup;
mod chain;
mod child;
pub(crate) mod clock;
mod fd;
pub(crate) mod files;
mod lock;
mod mem;
mod mntns;
mod mounts;
mod net;
mod peer;
mod process;
mod sandbox;
mod signals;
mod spawn;
pub(crate) mod systemd;
mod tty;
mod users;

#[cfg(test)]
pub(crate) use self::cgroup::test_cgroup;
pub(crate) use self::cgroup::{
    CgroupTree, Controller, JobCgroup, Limits, preview as cgroup_preview,
};
pub(crate) use self::chain::{ChainError, check_chain, check_writable};
pub(crate) use self::child::{ChildSetup, Credentials};
pub(crate) use self::fd::{
    create_at, open_read_at, open_write_at, poll_readable, rename_at, set_nonblocking_pipe,
    stat_at, unlink_at,
};
pub(crate) use self::lock::{LockError, lock_state_dir};
pub(crate) use self::mntns::LentNamespace;
pub(crate) use self::net::{ip_literal, is_loopback, set_send_buffer, split_authority};
pub(crate) use self::peer::{tcp_peer_uid, unix_peer_uid};
#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) use self::process::stay_on_this_cpu;
pub(crate) use self::process::{
    Member, boot_id, group_members, group_running, host_name, kill_group, pidfd_open,
    start_and_session, start_ticks,
};
pub(crate) use self::sandbox::{Sandbox, failed_step};
pub(crate) use self::signals::stop_signal_pipe;
pub(crate) use self::spawn::{
    Spawned, page_size, probe as probe_sandbox, signal_child, spawn, wait,
};
pub(crate) use self::tty::EchoOff;
pub(crate) use self::users::{
    UserInfo, all_users, euid, group_with_members, lookup_group, lookup_uid, lookup_user,
};
