//! Stored strings come from clients (host, path, user agent, user names), so they are rendered
//! as data: on a terminal every control character (C0, DEL, C1) and bidirectional override is
//! shown as an escape instead of being interpreted, and in CSV a cell that a spreadsheet would
//! run as a formula (`=`, `+`, `-`, `@`, tab, carriage return first) is prefixed with `'`.
//! JSON output needs neither: serde_json escapes control characters and keeps the rest exact.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters a terminal would act on, or that reorder what it shows.
fn unsafe_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every control character and bidirectional override written as an escape
/// (`\x1b`, `\n`, `\u{202e}`); borrowed when there is none.
pub fn terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_on_terminal) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && unsafe_on_terminal(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if unsafe_on_terminal(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// One CSV cell: control characters escaped as on a terminal (a CSV report is read with `cat`
/// as often as with a spreadsheet), neutralised if a spreadsheet would read it as a formula,
/// quoted when it holds a separator or quote.
pub fn csv_cell(s: &str) -> String {
    let s = terminal(s);
    let s = s.as_ref();
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let cell = if formula {
        Cow::Owned(format!("'{s}"))
    } else {
        Cow::Borrowed(s)
    };
    if formula || cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_escapes_are_shown_not_run() {
        assert!(matches!(terminal("alice"), Cow::Borrowed("alice")));
        assert_eq!(terminal("a\u{1b}[2Jb"), "a\\x1b[2Jb");
        assert_eq!(terminal("x\ny\r\t"), "x\\ny\\r\\t");
        assert_eq!(terminal("\u{9b}31m"), "\\x9b31m");
        assert_eq!(terminal("abc\u{202e}gpj.exe"), "abc\\u{202e}gpj.exe");
        assert_eq!(terminal("\u{7f}"), "\\x7f");
        assert_eq!(terminal("Grüße /ünï"), "Grüße /ünï");
    }

    #[test]
    fn csv_formulas_are_neutralised() {
        assert_eq!(csv_cell("=1+2"), "\"'=1+2\"");
        assert_eq!(csv_cell("+cmd|' /C calc'!A0"), "\"'+cmd|' /C calc'!A0\"");
        assert_eq!(csv_cell("@sum(1+1)"), "\"'@sum(1+1)\"");
        assert_eq!(csv_cell("-2"), "\"'-2\"");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("/login"), "/login");
        assert_eq!(csv_cell("a\u{1b}[2Jb"), "a\\x1b[2Jb");
        assert_eq!(csv_cell("\ttab"), "\\ttab");
    }
}
