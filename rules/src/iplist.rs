//! Address lists: inline CIDRs and files in the common one-entry-a-line format.
//!
//! The format covers FireHOL netsets (`# comment` lines, one address or CIDR per line) and
//! Spamhaus DROP/EDROP (`1.2.3.0/24 ; SBL123`). Everything after `#` or `;` is a comment; the
//! comment after an entry is kept as its note, so a decision can say which SBL record listed it.

use crate::address::parse_net;
use ipnet::IpNet;
use std::fmt;
use std::path::Path;

/// One listed network and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedNet {
    /// The network, host bits cleared.
    pub net: IpNet,
    /// `list:<file>` for file entries, `rule:<name>` for inline entries.
    pub origin: String,
    /// The comment on the entry's line, e.g. `SBL123`.
    pub note: Option<String>,
}

/// A line of a list file that is not an address or CIDR, or a file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// The file could not be read.
    #[error("{file}: cannot read: {reason}")]
    Read {
        /// The list file.
        file: String,
        /// The I/O error.
        reason: String,
    },
    /// A line is not an address or CIDR.
    #[error("{file}:{line}: \"{text}\" is not an address or CIDR")]
    Line {
        /// The list file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// The entry as written (comment stripped).
        text: String,
    },
}

/// Parses list text. `file` names the source in errors and in origins (`list:<file>`). All bad
/// lines are reported, each with its 1-based line number.
pub fn parse_list(text: &str, file: &str) -> Result<Vec<ListedNet>, Vec<ListError>> {
    let mut nets = Vec::new();
    let mut errors = Vec::new();
    let origin = format!("list:{file}");
    for (i, line) in text.lines().enumerate() {
        let (entry, comment) = match line.find(['#', ';']) {
            Some(pos) => (&line[..pos], Some(line[pos + 1..].trim())),
            None => (line, None),
        };
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        match parse_net(entry) {
            Some(net) => nets.push(ListedNet {
                net,
                origin: origin.clone(),
                note: comment.filter(|c| !c.is_empty()).map(str::to_string),
            }),
            None => errors.push(ListError::Line {
                file: file.to_string(),
                line: i + 1,
                text: entry.to_string(),
            }),
        }
    }
    if errors.is_empty() {
        Ok(nets)
    } else {
        Err(errors)
    }
}

/// Reads and parses a list file; origins are `list:<path as given>`.
pub fn load_list(path: &Path) -> Result<Vec<ListedNet>, Vec<ListError>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ListError::Read {
            file: file.clone(),
            reason: e.to_string(),
        }]
    })?;
    parse_list(&text, &file)
}

impl fmt::Display for ListedNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.net, self.origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIREHOL: &str = "\
#
# firehol_level1
#
# Maintainer      : FireHOL
# This File Date  : Mon Jan  1 00:00:00 UTC 2024
#
0.0.0.0/8
1.10.16.0/20
192.0.2.7
2001:db8::/32
";

    const SPAMHAUS: &str = "\
; Spamhaus DROP List 2024/01/01 - (c) 2024 The Spamhaus Project SLU
; https://www.spamhaus.org/drop/drop.txt
; Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT
1.10.16.0/20 ; SBL256894
1.19.0.0/16 ; SBL434604
";

    #[test]
    fn firehol_netset_with_comments_parses_every_entry() {
        let nets = parse_list(FIREHOL, "firehol_level1.netset").unwrap();
        let got: Vec<String> = nets.iter().map(|n| n.net.to_string()).collect();
        assert_eq!(
            got,
            ["0.0.0.0/8", "1.10.16.0/20", "192.0.2.7/32", "2001:db8::/32"]
        );
        assert_eq!(nets[0].origin, "list:firehol_level1.netset");
        assert_eq!(nets[0].note, None);
    }

    #[test]
    fn spamhaus_drop_keeps_the_sbl_reference_as_note() {
        let nets = parse_list(SPAMHAUS, "drop.txt").unwrap();
        assert_eq!(nets.len(), 2);
        assert_eq!(nets[0].net.to_string(), "1.10.16.0/20");
        assert_eq!(nets[0].note.as_deref(), Some("SBL256894"));
        assert_eq!(nets[1].origin, "list:drop.txt");
    }

    #[test]
    fn bad_lines_are_reported_with_line_numbers() {
        let errs = parse_list("1.2.3.0/24\nnot-an-ip ; x\n\n10.0.0.0/33\n", "bad.txt").unwrap_err();
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs,
            [
                "bad.txt:2: \"not-an-ip\" is not an address or CIDR",
                "bad.txt:4: \"10.0.0.0/33\" is not an address or CIDR",
            ]
        );
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let errs = load_list(Path::new("/nonexistent/warden/list.txt")).unwrap_err();
        assert!(matches!(errs[0], ListError::Read { .. }));
    }
}
