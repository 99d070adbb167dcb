//! The integration tests, one binary (as ripgrep does): each module starts the real
//! `sudo-agent` binary on an ephemeral loopback port in a temp dir and talks to it as its
//! clients do. One link step instead of twenty, and their tests share the thread pool.

/// Fixtures: an agent in a temp dir, a client, codes, process and memory probes.
mod common;

/// Requests held for a human: request, notify, approve, deny, expiry, restart.
mod approvals;
/// Held requests from the command line and SIP: run --request, pending, approve, deny.
mod approve_cli;
/// Web pages and DNS rebinding; the clients that must keep working.
mod attack_browser;
/// Brute force, bent codes, codes outside the window.
mod attack_codes;
/// Pagers, terminals and the agent's environment as a way in.
mod attack_env;
/// Trusted files and the results dir: links, modes, owners, races.
mod attack_files;
/// The HTTP loop under floods, slowloris and malformed requests.
mod attack_http;
/// Chaining, substitution, option smuggling, path tricks, forged log lines.
mod attack_injection;
/// Slow readers of large answers and histories of large jobs: memory stays bounded.
mod attack_memory;
/// Output floods, fork bombs, lingering and escaping jobs.
mod attack_resources;
/// Long-polls, idle clients and bare sockets filling every connection slot.
mod attack_slots;
/// Programs, notify and cwd that another user could swap: refused at load and at exec.
mod attack_trust;
/// Codes, replay, throttling and policy.
mod auth_and_policy;
/// Who asks, from the kernel: `callers`, `approvers`, TCP and the Unix socket.
mod callers;
/// Jobs start clean: own session without a terminal, no inherited fds, cwd, umask, signals.
mod clean_start;
/// Start-up refusals, `check`, `init` and `demo`.
mod config_cli;
/// A cgroup per job, the sandbox per rule, limits, and what the kernel cannot give.
mod containment;
/// Crashes and slow disks: used codes, acknowledged ids, half records, a free loop.
mod durability;
/// Enrolling a fleet: `init --uri-file`, `init --config-only`, `qr`.
mod enrol;
/// The Asterisk and Home Assistant examples against a real agent.
mod examples;
/// Every fuzz corpus file replayed through the fuzz targets' checks.
mod fuzz_corpus;
/// Bad input over HTTP, each with its own error.
mod http_limits;
/// `install` and `uninstall` into a `--root` tree.
mod install;
/// Our codes against `oathtool` and `pyotp`.
mod interop;
/// Timeouts, output caps, environment, waiting.
mod jobs_exec;
/// 202 and long-polls, queue, cancel, journal, history, notify.
mod jobs_lifecycle;
/// `sudo-agent mcp` over pipes.
mod mcp;
/// `GET /metrics` counters after a known sequence.
mod metrics;
/// One agent per state dir; recovery that never signals a stranger's processes.
mod one_agent;
/// Pattern kinds, `GET /rules`, escape-prone programs, examples and `explain`.
mod policy_cli;
/// `sudo-agent run`, its exit codes and the SIP flow.
mod run_client;
/// Socket activation, notifications, idle exit.
mod systemd;
