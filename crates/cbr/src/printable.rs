//! Text from files and file names made safe to print on a terminal: labels
//! and paths come from users' folders and from model files, and a control
//! character in one (a newline, an ANSI escape) must not forge a line of a
//! report or drive the terminal.

use std::borrow::Cow;
use std::path::Path;

use crate::pipeline::Skipped;

/// Characters printed escaped: control characters (C0, DEL, C1: newlines,
/// ANSI escapes) and the Unicode bidirectional controls, which can reorder
/// what a line appears to say.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every character from [`needs_escape`] written as `\n`, `\r`,
/// `\t` or `\u{..}`; borrowed when there is none.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A path for a report: lossy UTF-8, escaped as [`printable`].
pub fn path(p: &Path) -> String {
    printable(&p.to_string_lossy()).into_owned()
}

/// The lines a command prints about images it skipped: one per image
/// (`skipped PATH: REASON`), or with `quiet` a one-line count, so a quiet
/// run still says that something was left out.
pub fn skip_report(skipped: &[Skipped], quiet: bool) -> Vec<String> {
    if skipped.is_empty() {
        return Vec::new();
    }
    if quiet {
        let s = if skipped.len() == 1 { "" } else { "s" };
        return vec![format!(
            "skipped {} unreadable image{s} (run without -q to list them)",
            skipped.len()
        )];
    }
    skipped.iter().map(|s| format!("skipped {}: {}", path(&s.path), printable(&s.reason))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_escapes_are_escaped() {
        assert!(matches!(printable("chat noir é 猫"), Cow::Borrowed(_)));
        assert_eq!(printable("a\nb\tc\r"), "a\\nb\\tc\\r");
        assert_eq!(printable("\u{1b}[31mred\u{1b}[0m"), "\\u{1b}[31mred\\u{1b}[0m");
        assert_eq!(printable("x\u{7f}\u{9b}\u{202e}y"), "x\\u{7f}\\u{9b}\\u{202e}y");
    }

    #[test]
    fn a_newline_in_a_file_name_cannot_forge_a_report_line() {
        let skipped = vec![Skipped {
            path: "photos/cat/x.jpg: bad\nskipped photos/dog/y.jpg".into(),
            reason: "not an image".into(),
            duplicate_of: None,
        }];
        let lines = skip_report(&skipped, false);
        assert_eq!(lines.len(), 1);
        assert!(!lines[0].contains('\n'), "{lines:?}");
        assert_eq!(
            skip_report(&skipped, true),
            ["skipped 1 unreadable image (run without -q to list them)"]
        );
        assert!(skip_report(&[], true).is_empty());
    }
}
