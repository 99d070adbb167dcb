//! The allowlist: rules (`rule`), what each argv position accepts (`patterns`), a
//! command string to words (`words`), the first rule that fits (`matcher`), that
//! decision told step by step (`explain`), the examples a rule carries (`examples`) and
//! the programs whose wildcards are a way out (`escapes`), and who may ask (`caller`). No I/O but one `readlink` in
//! `escapes`: the trust chain of programs is judged in `sys::chain`.

mod caller;
mod escapes;
mod examples;
mod explain;
mod matcher;
mod patterns;
mod rule;
mod words;

pub use self::caller::{Caller, Via, Who};
pub use self::matcher::{Invocation, Plan, SHELL, matches, plan, plan_for};
pub use self::patterns::{ArgPattern, WordRe};
pub use self::rule::{Action, Rule};
pub use self::words::split_words;

pub(crate) use self::escapes::escape_for;
pub(crate) use self::examples::{wrong_allow, wrong_deny};
pub(crate) use self::explain::{Explanation, explain, quote};
pub(crate) use self::patterns::path_under_dir;
