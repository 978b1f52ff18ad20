//! `ip_list`: listed addresses and networks, inline (`entries`) and from list files (`files`,
//! relative to the rules file; the format is [`crate::iplist`]'s).
//!
//! A list decides from the list, not from records: the engine turns every entry into a decision
//! that lasts until the list changes ([`crate::list_decisions`]), so the kind has no state and
//! observes nothing.

use super::{Kind, Trigger};
use crate::address::parse_net;
use crate::clock::RecordClock;
use crate::config::{Escalation, RuleParser};
use crate::engine::Observation;
use crate::iplist::{self, ListedNet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The parameters of an `ip_list` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct IpList {
    /// Every listed network with where it came from.
    pub nets: Arc<[ListedNet]>,
    /// The list files, resolved, for the collector's file watcher.
    pub files: Vec<PathBuf>,
}

impl Kind for IpList {
    const NAME: &'static str = "ip_list";
    const FIELDS: &'static [&'static str] = &["entries", "files"];
    const OBSERVES_RECORDS: bool = false;
    type State = ();

    fn parse(p: &mut RuleParser<'_, '_, '_>) -> Option<IpList> {
        let entries = p.opt_string_list("entries").unwrap_or_default();
        let file_names = p.opt_string_list("files").unwrap_or_default();
        if p.get("entries").is_none() && p.get("files").is_none() {
            p.err("entries", "an ip_list rule needs entries, files or both");
            return None;
        }
        let mut nets = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match parse_net(entry) {
                Some(net) => nets.push(ListedNet {
                    net,
                    origin: format!("rule:{}", p.rule_label()),
                    note: None,
                }),
                None => p.err(
                    &format!("entries[{i}]"),
                    format!("\"{entry}\" is not an address or CIDR"),
                ),
            }
        }
        let mut files = Vec::new();
        for (i, name) in file_names.iter().enumerate() {
            let path = match p.base_dir() {
                Some(dir) if Path::new(name).is_relative() => dir.join(name),
                _ => PathBuf::from(name),
            };
            match iplist::load_list(&path) {
                Ok(list) => nets.extend(list),
                Err(errs) => {
                    for e in errs {
                        p.err(&format!("files[{i}]"), e.to_string());
                    }
                }
            }
            files.push(path);
        }
        Some(IpList {
            nets: nets.into(),
            files,
        })
    }

    fn new_state(&self, _: &RecordClock) {}

    fn observe(&self, _: &mut (), _: &mut Observation<'_, '_>) {}

    fn maintain(&self, _: &mut (), _: i64, _: Option<&Escalation>) {}

    fn tracked_keys(_: &()) -> usize {
        0
    }

    fn trigger(&self, _observed: u32) -> Trigger {
        // Never asked: list decisions are built by `list_decisions`, not from a trigger.
        Trigger {
            threshold: 0,
            window: Duration::ZERO,
            finding: String::new(),
        }
    }

    fn summary(&self) -> String {
        format!(
            "{} listed networks from {} file(s)",
            self.nets.len(),
            self.files.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuleSet;
    use crate::kinds::RuleKind;
    use crate::testing::*;

    rejects!(ip_list_needs_entries_or_files, set [("kind", "\"ip_list\"")], drop ["threshold", "window"],
        "rules.toml: rule \"login-brute-force\": entries: an ip_list rule needs entries, files or both");

    rejects!(ip_list_takes_no_match_conditions, set [("kind", "\"ip_list\""), ("entries", "[\"10.0.0.0/8\"]"), ("hosts", "[\"a\"]")], drop ["threshold", "window"],
        "rules.toml: rule \"login-brute-force\": hosts: not used by kind \"ip_list\"");

    rejects!(ip_list_takes_no_ban_ttl, set [("kind", "\"ip_list\""), ("entries", "[\"10.0.0.0/8\"]"), ("ban_ttl", "\"1h\"")], drop ["threshold", "window"],
        "rules.toml: rule \"login-brute-force\": ban_ttl: not used by kind \"ip_list\" (entries last until the list changes)");

    rejects!(ip_list_entries_must_be_cidrs, set [("kind", "\"ip_list\""), ("entries", "[\"10.0.0.0/8\", \"10.0.0.0/40\"]")], drop ["threshold", "window"],
        "rules.toml: rule \"login-brute-force\": entries[1]: \"10.0.0.0/40\" is not an address or CIDR");

    rejects!(ip_list_files_must_exist, set [("kind", "\"ip_list\""), ("files", "[\"/nonexistent/drop.txt\"]")], drop ["threshold", "window"],
        "rules.toml: rule \"login-brute-force\": files[0]: /nonexistent/drop.txt: cannot read: No such file or directory (os error 2)");

    #[test]
    fn ip_list_file_errors_carry_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("drop.txt"),
            "; Spamhaus DROP\n1.10.16.0/20 ; SBL1\nbogus ; SBL2\n",
        )
        .unwrap();
        let rules = dir.path().join("rules.toml");
        std::fs::write(
            &rules,
            "[[rules]]\nname = \"drop\"\nkind = \"ip_list\"\naction = \"deny\"\nfiles = [\"drop.txt\"]\n",
        )
        .unwrap();
        let errs: Vec<String> = RuleSet::check(&rules)
            .iter()
            .map(ToString::to_string)
            .collect();
        let list = dir.path().join("drop.txt");
        assert_eq!(
            errs,
            [format!(
                "{}: rule \"drop\": files[0]: {}:3: \"bogus\" is not an address or CIDR",
                rules.display(),
                list.display()
            )]
        );
    }

    #[test]
    fn ip_list_files_resolve_against_the_rules_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("drop.txt"), "1.10.16.0/20 ; SBL1\n").unwrap();
        let rules = dir.path().join("rules.toml");
        std::fs::write(
            &rules,
            "[[rules]]\nname = \"drop\"\nkind = \"ip_list\"\naction = \"deny\"\nentries = [\"192.0.2.1\"]\nfiles = [\"drop.txt\"]\n",
        )
        .unwrap();
        let set = RuleSet::load(&rules).unwrap();
        assert_eq!(set.list_files(), [dir.path().join("drop.txt")]);
        let RuleKind::IpList(IpList { nets, .. }) = &set.rules()[0].kind else {
            panic!("not a list")
        };
        assert_eq!(nets.len(), 2);
        assert_eq!(nets[0].origin, "rule:drop");
        assert_eq!(
            nets[1].origin,
            format!("list:{}", dir.path().join("drop.txt").display())
        );
    }
}
