//! `sudo-agent pending`: the requests held for approval, one table row each, with the
//! exact argv a code would run, each word quoted when it needs it and control characters
//! escaped (see `text::printable`).

use serde_json::Value;

use super::endpoint::Endpoint;
use super::run::{EXIT_UNREACHABLE, print_json, refusal_exit};
use super::shown::{argv_text, caller_name};
use crate::sys::clock;
use crate::text::printable;

/// Prints the table (or the agent's JSON); returns the exit code.
pub fn main(endpoint: &Endpoint, json: bool) -> i32 {
    let answer = endpoint
        .client()
        .and_then(|client| client.get_json("/pending"));
    let body = match answer {
        Ok(Ok(body)) => body,
        Ok(Err(refusal)) => {
            eprintln!(
                "sudo-agent: refused ({}): {}",
                refusal.error, refusal.message
            );
            return refusal_exit(&refusal);
        }
        Err(err) => {
            eprintln!("sudo-agent: {err}");
            return EXIT_UNREACHABLE;
        }
    };
    if json {
        print_json(&body);
    } else {
        print!("{}", table(&body, clock::now_unix()));
    }
    0
}

fn table(body: &Value, now: u64) -> String {
    let empty = Vec::new();
    let rows = body["pending"].as_array().unwrap_or(&empty);
    if rows.is_empty() {
        return "nothing awaits approval\n".into();
    }
    let text = |row: &Value, key: &str| printable(row[key].as_str().unwrap_or("-"));
    let mut out = format!(
        "{:<8} {:>7}  {:<12} {:<16} COMMAND\n",
        "APPROVAL", "EXPIRES", "CALLER", "RULE"
    );
    for row in rows {
        let left = row["expires_at"].as_u64().unwrap_or(0).saturating_sub(now);
        out.push_str(&format!(
            "{:<8} {:>6}s  {:<12} {:<16} {}\n",
            text(row, "approval"),
            left,
            caller_name(&row["caller"]),
            text(row, "rule"),
            argv_text(&row["argv"]),
        ));
        if let Some(reason) = row["reason"].as_str() {
            out.push_str(&format!("{:<8} reason: {}\n", "", printable(reason)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_show_the_exact_command_and_who_asked() {
        let body = json!({"pending": [
            {"id": "a", "approval": "K7Q2", "command": "systemctl restart nginx",
             "argv": ["/bin/systemctl", "restart", "nginx\u{1b}[2K"], "rule": "restart", "caller": {"via": "unix", "uid": 1001, "user": "claude"},
             "reason": "site down", "submitted_at": 90, "expires_at": 400},
            {"id": "b", "approval": "XY34", "command": "df -h", "argv": ["/bin/df", "-h"], "rule": "df",
             "caller": {"via": "tcp", "uid": 7, "user": null}, "reason": null,
             "submitted_at": 90, "expires_at": 50},
        ]});
        let out = table(&body, 100);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines[0].starts_with("APPROVAL"), "{out}");
        assert!(
            lines[1].starts_with("K7Q2        300s  claude       restart")
                && lines[1].ends_with("/bin/systemctl restart 'nginx\\u{1b}[2K'"),
            "{out}"
        );
        assert!(
            lines[2].trim_start().starts_with("reason: site down"),
            "{out}"
        );
        assert!(lines[3].contains("0s  uid 7"), "{out}");
        assert_eq!(
            table(&json!({"pending": []}), 0),
            "nothing awaits approval\n"
        );
    }
}
