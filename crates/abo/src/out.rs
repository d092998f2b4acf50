//! What abo writes for a person, in one place per stream: stdout ([`emit`], [`say!`]), stderr
//! ([`emit_err`], [`note!`]; the live progress writes its lines through [`for_terminal`]).
//!
//! Text abo prints comes in part from what it ran: file names a change holds, an agent's error,
//! a gate's output in a failure reason. None of it reaches the terminal as control characters
//! (an escape sequence can set the window title, write the clipboard, hide or forge lines): each
//! is shown escaped, `\x1b` or `\u{202e}`. JSON goes out through [`emit_json`] instead, whose
//! strings serde_json has already escaped, and which escapes the rest the JSON way.
//!
//! A reader that went away (`abo events | head`) ends abo quietly, exit 0.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;

/// Whether a character does something to a terminal other than print: C0 controls but newline
/// and tab, DEL, C1 controls, and the bidirectional overrides and isolates (which reorder what
/// follows them on screen).
fn is_control(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// `text` with every control character shown escaped: `\x1b` for C0 and DEL, `\u{9b}` above.
pub(crate) fn for_terminal(text: &str) -> Cow<'_, str> {
    escape(text, |out, c| {
        let _ = if u32::from(c) < 0x80 {
            write!(out, "\\x{:02x}", u32::from(c))
        } else {
            write!(out, "\\u{{{:x}}}", u32::from(c))
        };
    })
}

/// A JSON document with the control characters serde_json leaves as they are (DEL, C1, bidi
/// controls: they can only be inside its strings) escaped as JSON escapes, so it means the same.
fn json_for_terminal(json: &str) -> Cow<'_, str> {
    escape(json, |out, c| {
        let mut units = [0u16; 2];
        for u in c.encode_utf16(&mut units) {
            let _ = write!(out, "\\u{u:04x}");
        }
    })
}

fn escape(text: &str, esc: impl Fn(&mut String, char)) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_control(c) {
            esc(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Writes text for a person to stdout, control characters escaped.
pub(crate) fn emit(text: &str) {
    write_stdout(&for_terminal(text));
}

/// Writes a JSON document (and its newline) to stdout.
pub(crate) fn emit_json(json: &str) {
    write_stdout(&json_for_terminal(json));
}

fn write_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// Writes text for a person to stderr (notes, warnings, errors), control characters escaped.
pub(crate) fn emit_err(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err
        .write_all(for_terminal(text).as_bytes())
        .and_then(|()| err.flush());
}

/// `println!` to stdout, through [`emit`].
macro_rules! say {
    ($($arg:tt)*) => { $crate::out::emit(&format!("{}\n", format_args!($($arg)*))) };
}

/// `print!` to stdout, through [`emit`].
macro_rules! say_raw {
    ($($arg:tt)*) => { $crate::out::emit(&format!($($arg)*)) };
}

/// A JSON document on a line of stdout, through [`emit_json`].
macro_rules! say_json {
    ($json:expr) => {
        $crate::out::emit_json(&format!("{}\n", $json))
    };
}

/// `eprintln!` to stderr, through [`emit_err`].
macro_rules! note {
    ($($arg:tt)*) => { $crate::out::emit_err(&format!("{}\n", format_args!($($arg)*))) };
}

pub(crate) use {note, say, say_json, say_raw};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_escaped() {
        let check = |text: &str, shown: &str| assert_eq!(for_terminal(text), shown, "{text:?}");
        // Attacks: a title, a colour, a clipboard write (OSC 52), CSI as one C1 character, a
        // carriage return that overwrites the line, DEL, bidi overrides and isolates.
        check(
            "a\u{1b}]0;TITLE-PWNED\u{7}\u{1b}[31mred.md",
            "a\\x1b]0;TITLE-PWNED\\x07\\x1b[31mred.md",
        );
        check("\u{1b}]52;c;ZWNobw==\u{1b}\\", "\\x1b]52;c;ZWNobw==\\x1b\\");
        check("\u{9b}2J\u{85}", "\\u{9b}2J\\u{85}");
        check("ok\rFAILED\u{7f}", "ok\\x0dFAILED\\x7f");
        check(
            "\u{202e}dm.exe\u{2066}x\u{2069}",
            "\\u{202e}dm.exe\\u{2066}x\\u{2069}",
        );
        // Controls: newlines, tabs and other text pass as they are.
        check(
            "line 1\n\tline 2 µs é ☃ \u{a0}\u{200f}",
            "line 1\n\tline 2 µs é ☃ \u{a0}\u{200f}",
        );
        assert!(matches!(for_terminal("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_keeps_its_meaning_with_its_control_characters_escaped() {
        let name = "a\u{1b}]0;T\u{7}\u{7f}\u{9b}\u{202e}.md";
        let json = serde_json::json!({ "path": name }).to_string();
        let shown = json_for_terminal(&json);
        assert!(!shown.chars().any(is_control), "{shown}");
        assert_eq!(
            shown,
            r#"{"path":"a\u001b]0;T\u0007\u007f\u009b\u202e.md"}"#
        );
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back["path"], name);
    }
}
