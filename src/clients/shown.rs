//! A held request as a human reads it before approving: the argv word by word and who
//! asked, with nothing a terminal or phone would act on (see `text::printable`).

use serde_json::Value;

use crate::text::printable;

/// Who asked, as `approvals.notify` names it: the user, else `uid N`, else `unknown`.
pub fn caller_name(caller: &Value) -> String {
    match (caller["user"].as_str(), caller["uid"].as_u64()) {
        (Some(user), _) => printable(user),
        (None, Some(uid)) => format!("uid {uid}"),
        (None, None) => "unknown".into(),
    }
}

/// The argv as one line a human can check word by word: each word quoted when it
/// holds anything but plain characters, control characters escaped.
pub fn argv_text(argv: &Value) -> String {
    let words = argv.as_array().map(Vec::as_slice).unwrap_or_default();
    let plain = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    };
    let quoted: Vec<String> = words
        .iter()
        .map(|w| {
            let w = w.as_str().unwrap_or("?");
            match plain(w) {
                true => w.to_string(),
                false => format!("'{}'", printable(&w.replace('\'', "'\\''"))),
            }
        })
        .collect();
    quoted.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn commands_are_shown_word_by_word() {
        let argv = json!(["/bin/systemctl", "restart", "nginx.service"]);
        assert_eq!(argv_text(&argv), "/bin/systemctl restart nginx.service");
        let argv = json!(["/bin/echo", "a b", "it's", "", "\u{1b}[2K"]);
        assert_eq!(
            argv_text(&argv),
            r"/bin/echo 'a b' 'it'\''s' '' '\u{1b}[2K'"
        );
    }

    #[test]
    fn callers_are_named_as_notify_names_them() {
        let name = |v: Value| caller_name(&v);
        assert_eq!(
            name(json!({"via": "unix", "uid": 1001, "user": "claude"})),
            "claude"
        );
        assert_eq!(name(json!({"via": "tcp", "uid": 7, "user": null})), "uid 7");
        assert_eq!(
            name(json!({"via": "tcp", "uid": null, "user": null})),
            "unknown"
        );
    }
}
