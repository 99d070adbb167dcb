//! The text format of the old agent's SIP flow: a phone sends `Agent: 123456 df -h /`
//! as a SIP MESSAGE, Asterisk hands the body to `sudo-agent run --message`, and the
//! reply goes back as one MESSAGE, short enough for any SIP path to carry. A held
//! request is approved with `Agent: 123456 approve K7Q2` and refused with
//! `Agent: deny K7Q2`.

use std::fmt;

use crate::text::utf8_prefix;

/// Longest reply in bytes. SIP over UDP must stay under the path MTU (RFC 3261 §18.1.1:
/// 1300 bytes for the whole request); headers take a few hundred.
pub const MAX_REPLY: usize = 1000;
/// Longest code looked at; real codes have 6–8 digits.
const MAX_PIN: usize = 16;

/// What a message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `Agent: [CODE] COMMAND`: without a code the request is held for approval (or
    /// runs at once under a `no_pin` rule).
    Run {
        pin: Option<String>,
        command: String,
    },
    /// `Agent: CODE approve APPROVAL`.
    Approve { pin: String, approval: String },
    /// `Agent: deny APPROVAL`.
    Deny { approval: String },
}

/// Whether `word` has the shape of an approval code: 4–6 letters and digits, either
/// case (the agent tells a mistyped one: `not_found`).
pub fn is_approval(word: &str) -> bool {
    (4..=6).contains(&word.len()) && word.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    NoPrefix,
    NoCommand,
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = "expected `Agent: CODE COMMAND`, e.g. `Agent: 123456 df -h /`";
        match self {
            Self::NoPrefix => write!(f, "the message does not start with `Agent:`; {shape}"),
            Self::NoCommand => write!(f, "the message holds no command; {shape}"),
        }
    }
}

impl std::error::Error for MessageError {}

/// Parses `Agent: CODE COMMAND`. The prefix is matched case-insensitively, spaces are
/// tolerated around it and between the parts, and the code may be left out (a first
/// word that is not all digits starts the command). The command stays one line for the
/// agent to split with its quoting rules. `approve X` after a code and `deny X` alone,
/// X an approval code, are the two answers to a held request.
pub fn parse_message(text: &str) -> Result<Message, MessageError> {
    let text = text.trim();
    let rest = text
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("agent"))
        .map(|_| text[5..].trim_start())
        .and_then(|r| r.strip_prefix(':'))
        .ok_or(MessageError::NoPrefix)?
        .trim_start();
    let (first, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let is_code =
        !first.is_empty() && first.len() <= MAX_PIN && first.bytes().all(|b| b.is_ascii_digit());
    let (pin, command) = if is_code {
        (Some(first.to_string()), after.trim())
    } else {
        (None, rest)
    };
    if command.is_empty() {
        return Err(MessageError::NoCommand);
    }
    let words: Vec<&str> = command.split_whitespace().collect();
    Ok(match (pin, words.as_slice()) {
        (Some(pin), [verb, approval])
            if verb.eq_ignore_ascii_case("approve") && is_approval(approval) =>
        {
            Message::Approve {
                pin,
                approval: approval.to_ascii_uppercase(),
            }
        }
        (None, [verb, approval]) if verb.eq_ignore_ascii_case("deny") && is_approval(approval) => {
            Message::Deny {
                approval: approval.to_ascii_uppercase(),
            }
        }
        (pin, _) => Message::Run {
            pin,
            command: command.to_string(),
        },
    })
}

/// One reply of at most `MAX_REPLY` bytes: `head` (one line), then the first lines of
/// `body` that fit, then `… full result in <file>` when anything was cut.
pub fn reply(head: &str, body: &str, result_file: Option<&str>) -> String {
    let head = head.trim_end();
    let body = body.trim_end();
    let whole = if body.is_empty() {
        head.to_string()
    } else {
        format!("{head}\n{body}")
    };
    if whole.len() <= MAX_REPLY {
        return whole;
    }
    let tail = match result_file {
        Some(file) => format!("\n… full result in {file}"),
        None => "\n… (cut)".to_string(),
    };
    let room = MAX_REPLY.saturating_sub(tail.len());
    let mut out = String::with_capacity(MAX_REPLY);
    for line in whole.split_inclusive('\n') {
        if out.len() + line.len() > room {
            if out.is_empty() {
                // Not even one line fits: cut it at a character boundary.
                out.push_str(utf8_prefix(line, room));
            }
            break;
        }
        out.push_str(line);
    }
    let mut out = out.trim_end().to_string();
    out.push_str(&tail);
    if out.len() > MAX_REPLY {
        // Only a result path longer than the whole budget gets here.
        out = utf8_prefix(&out, MAX_REPLY).to_string();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(pin: Option<&str>, command: &str) -> Message {
        Message::Run {
            pin: pin.map(String::from),
            command: command.into(),
        }
    }

    #[test]
    fn parses_answers_to_held_requests() {
        assert_eq!(
            parse_message("Agent: 123456 approve k7q2"),
            Ok(Message::Approve {
                pin: "123456".into(),
                approval: "K7Q2".into()
            })
        );
        assert_eq!(
            parse_message("agent:  DENY  K7Q2 "),
            Ok(Message::Deny {
                approval: "K7Q2".into()
            })
        );
        // Not an approval code (too short, too long, not alphanumeric), a deny with a
        // code, an approve without: commands, which the policy judges.
        for text in [
            "Agent: 123456 approve K-Q2",
            "Agent: 123456 approve K7Q",
            "Agent: 123456 approve K7Q2K7Q",
            "Agent: 123456 approve K7Q2 now",
            "Agent: 123456 deny K7Q2",
            "Agent: approve K7Q2",
        ] {
            assert!(
                matches!(parse_message(text), Ok(Message::Run { .. })),
                "{text}"
            );
        }
        assert!(is_approval("ACDE") && is_approval("y3479x") && !is_approval("AB_D"));
    }

    #[test]
    fn parses_the_old_agents_messages() {
        let cases = [
            ("Agent: 123456 df -h /", msg(Some("123456"), "df -h /")),
            ("agent: 123456 df -h /", msg(Some("123456"), "df -h /")),
            ("AGENT:123456 uptime", msg(Some("123456"), "uptime")),
            (
                "  Agent :   123456    df   -h  /  \r\n",
                msg(Some("123456"), "df   -h  /"),
            ),
            (
                "Agent:\t12345678\tsystemctl status nginx",
                msg(Some("12345678"), "systemctl status nginx"),
            ),
            ("Agent: uptime", msg(None, "uptime")),
            (
                "Agent: 123456 echo 'a  b' \"c\"",
                msg(Some("123456"), "echo 'a  b' \"c\""),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_message(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn refuses_other_messages() {
        for text in [
            "",
            "hello",
            "Agen: 1 x",
            "Agent 123456 df",
            "Agentx: 1 df",
            "é",
        ] {
            assert_eq!(parse_message(text), Err(MessageError::NoPrefix), "{text:?}");
        }
        for text in ["Agent:", "agent:   ", "Agent: 123456", "Agent: 123456   \n"] {
            assert_eq!(
                parse_message(text),
                Err(MessageError::NoCommand),
                "{text:?}"
            );
        }
    }

    #[test]
    fn short_replies_are_whole() {
        assert_eq!(reply("ok rc=0", "hi\n", Some("/r")), "ok rc=0\nhi");
        assert_eq!(
            reply("refused: wrong code", "", None),
            "refused: wrong code"
        );
    }

    #[test]
    fn long_replies_keep_first_lines_and_name_the_file() {
        let body: String = (1..=500).map(|n| format!("line {n}\n")).collect();
        let file = "/tmp/sudo-agent/agent-0123456789abcdef0123456789abcdef.txt";
        let r = reply("succeeded rc=0: seq", &body, Some(file));
        assert!(r.len() <= MAX_REPLY, "{}", r.len());
        assert!(
            r.starts_with("succeeded rc=0: seq\nline 1\nline 2\n"),
            "{r}"
        );
        assert!(r.ends_with(&format!("\n… full result in {file}")), "{r}");
        // Whole lines only: the last kept line is complete.
        let kept: Vec<&str> = r.lines().collect();
        let last = kept[kept.len() - 2];
        assert!(body.contains(&format!("{last}\n")), "{last}");
        assert!(r.len() > MAX_REPLY - 20, "uses the room: {}", r.len());
    }

    #[test]
    fn one_huge_line_is_cut_on_a_char_boundary() {
        let body = "é".repeat(2000);
        let r = reply("x", &body, None);
        assert!(r.len() <= MAX_REPLY);
        assert!(r.ends_with("\n… (cut)"));
        let r = reply(&"h".repeat(3000), "", Some("/f"));
        assert!(
            r.len() <= MAX_REPLY && r.ends_with("… full result in /f"),
            "{r}"
        );
        let r = reply("x", &"y".repeat(2000), Some(&"/".repeat(2000)));
        assert!(r.len() <= MAX_REPLY);
    }
}
