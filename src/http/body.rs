//! Request bodies, decoded by hand from JSON so that no message ever quotes what the
//! client sent. serde's do (``invalid type: integer `614029`, expected a string``), and
//! the message goes to the client, the audit log and the systemd journal: a code that
//! reaches a log is a code whoever reads the log can use. Messages here name the field
//! and the type it needs; an unknown key is named only when it is made of letters (a
//! misspelt field), never when it could be a code.
//!
//! A `pin` of the wrong shape (`614029`, `["614029"]`) is refused, and what it held is
//! handed back as [`BadBody::stray_pin`] so the caller can spend it: whatever the client
//! meant, that code has now travelled somewhere it was not meant to go.
//!
//! Memory: the body is at most `MAX_BODY` (64 KiB) and is decoded once, on the loop
//! thread, into JSON values freed when the request is answered (serde_json's nesting
//! limit of 128 bounds the recursion).

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::error::Category;

/// At most this many candidate codes are taken from a misshapen `pin`.
const MAX_STRAY: usize = 8;
/// Characters kept of each; a real code has 6–8 digits.
const STRAY_CHARS: usize = 16;

/// The fields of `POST /` and `POST /run`, and of `/request`, `/approve` and `/deny`
/// (each its own set of them).
#[derive(Debug, Default, PartialEq)]
pub struct Submit {
    pub pin: Option<String>,
    pub command: Option<String>,
    pub argv: Option<Vec<String>>,
    pub wait: Option<f64>,
    pub reason: Option<String>,
    pub approval: Option<String>,
}

/// The fields each route takes.
pub const RUN: &[&str] = &["pin", "command", "argv", "wait"];
pub const REQUEST: &[&str] = &["command", "argv", "reason", "wait", "pin"];
pub const APPROVE: &[&str] = &["approval", "pin", "wait"];
pub const DENY: &[&str] = &["approval"];

/// The fields of `POST /job/<id>/cancel`.
#[derive(Debug, Default, PartialEq)]
pub struct Cancel {
    pub pin: Option<String>,
}

/// A body that was refused.
#[derive(Debug, PartialEq)]
pub struct BadBody {
    /// For the client and the audit log: fields and types, never a value.
    pub message: String,
    /// What a `pin` of the wrong shape held (a number's digits, strings inside a list or
    /// object), to be spent; empty when the pin was fine or absent.
    pub stray_pin: Vec<String>,
    /// The `command` string, if the body had one, for the audit line of a spent code.
    pub command: Option<String>,
}

/// Decodes a body of the fields `allowed` ([`RUN`], [`REQUEST`], ...), each optional.
pub fn submit(body: &[u8], allowed: &[&str]) -> Result<Submit, BadBody> {
    let mut out = Submit::default();
    let mut checked = Checked::parse(body, allowed)?;
    out.pin = checked.pin.take();
    for (name, value) in std::mem::take(&mut checked.fields) {
        match (name.as_str(), value) {
            (_, Value::Null) => {}
            ("command", Value::String(text)) => out.command = Some(text),
            ("reason", Value::String(text)) => out.reason = Some(text),
            ("approval", Value::String(text)) => out.approval = Some(text),
            ("reason" | "approval", _) => checked.refuse(&format!("{name} must be a string")),
            ("argv", Value::Array(items)) => {
                let words: Option<Vec<String>> = items
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => Some(s),
                        _ => None,
                    })
                    .collect();
                match words {
                    Some(words) => out.argv = Some(words),
                    None => checked.refuse("argv must be a list of strings"),
                }
            }
            ("wait", Value::Number(n)) => match n.as_f64() {
                Some(secs) => out.wait = Some(secs),
                None => checked.refuse("wait must be a number of seconds"),
            },
            ("command", _) => checked.refuse("command must be a string"),
            ("argv", _) => checked.refuse("argv must be a list of strings"),
            _ => checked.refuse("wait must be a number of seconds"),
        }
    }
    checked.finish(out.command.clone()).map(|()| out)
}

/// Decodes a cancel body: an optional `pin`.
pub fn cancel(body: &[u8]) -> Result<Cancel, BadBody> {
    let mut checked = Checked::parse(body, &["pin"])?;
    let pin = checked.pin.take();
    checked.finish(None).map(|()| Cancel { pin })
}

/// A body's fields once its shape is known good enough to look at: the `pin` taken
/// out (or its stray content kept), the rest to be typed by the caller, and the first
/// problem found.
struct Checked {
    pin: Option<String>,
    stray_pin: Vec<String>,
    fields: Vec<(String, Value)>,
    problem: Option<String>,
}

impl Checked {
    /// An object with no unknown or repeated key among `allowed`; a `pin` that is not a
    /// string (or null) is a problem whose content is kept, but the other fields are
    /// still looked at, so the stray code is spent whatever else is wrong.
    fn parse(body: &[u8], allowed: &[&str]) -> Result<Checked, BadBody> {
        let pairs = match serde_json::from_slice::<Pairs>(body) {
            Ok(Pairs(pairs)) => pairs,
            Err(err) => {
                let message = match err.classify() {
                    // Syntax messages say where, never what: "expected value at line 1
                    // column 9".
                    Category::Syntax | Category::Eof | Category::Io => {
                        format!("malformed JSON body: {err}")
                    }
                    Category::Data => "the body must be a JSON object".to_owned(),
                };
                return Err(BadBody {
                    message,
                    stray_pin: Vec::new(),
                    command: None,
                });
            }
        };
        let mut checked = Checked {
            pin: None,
            stray_pin: Vec::new(),
            fields: Vec::with_capacity(pairs.len()),
            problem: None,
        };
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in pairs {
            let Some(&known) = allowed.iter().find(|a| **a == name) else {
                checked.refuse(&unknown_field(&name, allowed));
                continue;
            };
            if seen.contains(&known) {
                // Two parsers may pick different copies; refuse rather than guess.
                checked.refuse(&format!("{known} is given twice"));
            }
            seen.push(known);
            if known != "pin" {
                checked.fields.push((name, value));
                continue;
            }
            match value {
                Value::String(pin) => checked.pin = Some(pin),
                Value::Null => {}
                other => {
                    stray_leaves(&other, &mut checked.stray_pin);
                    checked.refuse("pin must be a string (the code as text, e.g. \"123456\")");
                }
            }
        }
        Ok(checked)
    }

    /// Records `message` unless an earlier problem was found.
    fn refuse(&mut self, message: &str) {
        if self.problem.is_none() {
            self.problem = Some(message.to_owned());
        }
    }

    fn finish(self, command: Option<String>) -> Result<(), BadBody> {
        match self.problem {
            None => Ok(()),
            Some(message) => Err(BadBody {
                message,
                stray_pin: self.stray_pin,
                command,
            }),
        }
    }
}

/// `unknown field "comand"; …` for a name of letters and `_`, else without the name.
fn unknown_field(name: &str, allowed: &[&str]) -> String {
    let fields = allowed.join(", ");
    let plain = !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_');
    if plain {
        format!("unknown field \"{name}\"; the fields are {fields}")
    } else {
        format!("unknown field; the fields are {fields}")
    }
}

/// The strings, numbers and keys inside a misshapen pin, at most [`MAX_STRAY`]. A whole
/// number is written without exponent or fraction (`614029.0` → `614029`).
fn stray_leaves(value: &Value, out: &mut Vec<String>) {
    fn push(out: &mut Vec<String>, text: &str) {
        if out.len() < MAX_STRAY {
            out.push(text.chars().take(STRAY_CHARS).collect());
        }
    }
    match value {
        Value::String(text) => push(out, text),
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(whole), _) => push(out, &whole.to_string()),
            // Whole and in range, so the cast is exact (and needs no float formatting).
            (None, Some(f)) if f.fract() == 0.0 && (0.0..1e12).contains(&f) => {
                push(out, &(f as u64).to_string());
            }
            _ => push(out, &n.to_string()),
        },
        Value::Array(items) => items.iter().for_each(|v| stray_leaves(v, out)),
        Value::Object(map) => {
            for (key, v) in map {
                push(out, key);
                stray_leaves(v, out);
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

/// A JSON object's entries in order, repeated keys kept (a map would keep one silently).
struct Pairs(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Pairs, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    pairs.push(entry);
                }
                Ok(Pairs(pairs))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> BadBody {
        submit(body.as_bytes(), RUN).unwrap_err()
    }

    #[test]
    fn good_bodies() {
        assert_eq!(
            submit(
                br#"{"pin": "123456", "command": "df -h", "wait": 2.5}"#,
                RUN
            )
            .unwrap(),
            Submit {
                pin: Some("123456".into()),
                command: Some("df -h".into()),
                argv: None,
                wait: Some(2.5),
                ..Submit::default()
            }
        );
        let held = submit(br#"{"command": "df", "reason": "disk"}"#, REQUEST).unwrap();
        assert_eq!(held.reason.as_deref(), Some("disk"));
        let approve = submit(br#"{"approval": "k7q3", "pin": "1"}"#, APPROVE).unwrap();
        assert_eq!(approve.approval.as_deref(), Some("k7q3"));
        // Each route its own fields (a code sent to /request is taken, to be spent).
        assert!(submit(br#"{"approval": "K7Q3", "pin": "1"}"#, DENY).is_err());
        assert!(submit(br#"{"approval": 7}"#, DENY).is_err());
        let s = submit(br#"{"argv": ["df", "-h"], "pin": null, "wait": null}"#, RUN).unwrap();
        assert_eq!(s.argv, Some(vec!["df".to_string(), "-h".to_string()]));
        assert_eq!(s.pin, None);
        assert_eq!(cancel(b"{}").unwrap(), Cancel::default());
    }

    #[test]
    fn no_message_quotes_a_value_and_stray_pins_are_kept() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                r#"{"pin": 614029, "command": "x"}"#,
                "pin must be a string",
                &["614029"],
            ),
            (r#"{"pin": 614029.0}"#, "pin must be a string", &["614029"]),
            (r#"{"pin": 6.14029e5}"#, "pin must be a string", &["614029"]),
            (
                r#"{"pin": ["614029", 7]}"#,
                "pin must be a string",
                &["614029", "7"],
            ),
            (
                r#"{"pin": {"614029": true}}"#,
                "pin must be a string",
                &["614029"],
            ),
            (r#"{"pin": true}"#, "pin must be a string", &[]),
            // The pin is refused first; the rest is still read, and the code still kept.
            (
                r#"{"command": 614029, "pin": 614029}"#,
                "pin must be a string",
                &["614029"],
            ),
            (r#"{"command": 614029}"#, "command must be a string", &[]),
            (r#"{"argv": [614029]}"#, "argv must be a list", &[]),
            (r#"{"argv": "614029"}"#, "argv must be a list", &[]),
            (r#"{"wait": "614029"}"#, "wait must be a number", &[]),
            (r#"{"614029": "x"}"#, "unknown field; the fields are", &[]),
            (r#"{"comand": "x"}"#, "unknown field \"comand\"", &[]),
            (
                r#"{"pin": "1", "pin": 614029}"#,
                "pin is given twice",
                &["614029"],
            ),
            (
                r#"{"command": "a", "command": "b"}"#,
                "command is given twice",
                &[],
            ),
            (r#""614029""#, "the body must be a JSON object", &[]),
            (r#"614029"#, "the body must be a JSON object", &[]),
            (r#"[614029]"#, "the body must be a JSON object", &[]),
            (r#"{"pin": 0614029}"#, "malformed JSON body", &[]),
            (r#"{"pin": "614029""#, "malformed JSON body", &[]),
        ];
        for (body, needle, stray) in cases {
            let err = refused(body);
            assert!(err.message.contains(needle), "{body}: {}", err.message);
            assert!(!err.message.contains("614029"), "{body}: {}", err.message);
            assert!(!err.message.contains("4029"), "{body}: {}", err.message);
            assert_eq!(&err.stray_pin, stray, "{body}");
        }
        let err = cancel(br#"{"pin": 614029}"#).unwrap_err();
        assert_eq!(err.stray_pin, ["614029"]);
        assert!(cancel(br#"{"pin": "1", "command": "x"}"#).is_err());
    }

    #[test]
    fn stray_content_is_bounded() {
        let many: Vec<String> = (0..100).map(|n| format!("\"{n:0>40}\"")).collect();
        let err = refused(&format!(r#"{{"pin": [{}]}}"#, many.join(",")));
        assert_eq!(err.stray_pin.len(), MAX_STRAY);
        assert!(err.stray_pin.iter().all(|s| s.len() == STRAY_CHARS));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let err = refused(&format!(r#"{{"pin": {deep}}}"#));
        assert!(err.message.contains("malformed JSON"), "{}", err.message);
    }
}
