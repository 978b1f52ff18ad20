//! Bounds on what a record carries: every string at most [`MAX_STRING_BYTES`] with control
//! characters replaced, every list at most [`MAX_LIST`] entries. The collector renders records in
//! terminals and stores them per event, so nothing a sender chooses may be long or carry escape
//! sequences.

/// Longest string in a record, in bytes (a longer one is cut on a char boundary and ends in "…").
pub const MAX_STRING_BYTES: usize = 512;

/// Most entries in a record's list; a longer list keeps `MAX_LIST - 1` and ends in "… N more".
pub const MAX_LIST: usize = 64;

/// Whether `c` must not reach a terminal: C0/C1 controls and DEL, the Unicode line and paragraph
/// separators, and the bidirectional overrides that can make a line read differently from what it
/// holds ("Trojan Source").
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// `s` with unsafe characters replaced by U+FFFD and cut to [`MAX_STRING_BYTES`].
pub fn clean(s: &str) -> String {
    const ELLIPSIS: char = '…';
    let fix = |c: char| if unsafe_char(c) { '\u{fffd}' } else { c };
    // Whether the whole string fits once replaced decides between keeping all of it and cutting
    // it to leave room for the ellipsis; the count stops as soon as it is known not to fit.
    let mut size = 0usize;
    let fits = s.chars().all(|c| {
        size += fix(c).len_utf8();
        size <= MAX_STRING_BYTES
    });
    let budget = if fits {
        MAX_STRING_BYTES
    } else {
        MAX_STRING_BYTES - ELLIPSIS.len_utf8()
    };
    let mut out = String::with_capacity(size.min(MAX_STRING_BYTES));
    for c in s.chars().map(fix) {
        if out.len() + c.len_utf8() > budget {
            out.push(ELLIPSIS);
            break;
        }
        out.push(c);
    }
    out
}

/// `v` cleaned, deduplicated (first occurrence kept) and cut to [`MAX_LIST`] entries.
pub fn clean_list(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::with_capacity(v.len().min(4 * MAX_LIST));
    let mut out = Vec::with_capacity(v.len().min(MAX_LIST));
    let mut total = 0usize;
    for s in v.drain(..) {
        let s = clean(&s);
        if seen.contains(&s) {
            continue;
        }
        total += 1;
        if out.len() < MAX_LIST {
            seen.insert(s.clone());
            out.push(s);
        } else {
            // Past the cap, duplicates cannot be told apart without keeping every entry; the
            // count is then an upper bound, which is all "… N more" promises.
            seen.insert(s);
        }
    }
    if total > MAX_LIST {
        out.truncate(MAX_LIST - 1);
        out.push(format!("… {} more", total - (MAX_LIST - 1)));
    }
    *v = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_pass_unchanged() {
        assert_eq!(clean("shop.example.com"), "shop.example.com");
        assert_eq!(clean(""), "");
    }

    #[test]
    fn control_and_bidi_characters_are_replaced() {
        assert_eq!(
            clean("a\u{1b}[31mb\nc\u{7f}d\u{9b}"),
            "a\u{fffd}[31mb\u{fffd}c\u{fffd}d\u{fffd}"
        );
        assert_eq!(clean("x\u{202e}y\u{2066}z"), "x\u{fffd}y\u{fffd}z");
    }

    #[test]
    fn long_strings_are_cut_on_a_char_boundary_with_an_ellipsis() {
        let s = "é".repeat(1000);
        let c = clean(&s);
        assert!(c.len() <= MAX_STRING_BYTES, "{}", c.len());
        assert!(c.ends_with('…'));
        assert!(c.len() > MAX_STRING_BYTES - 8);
        let exact = "a".repeat(MAX_STRING_BYTES);
        assert_eq!(clean(&exact), exact);
        let over = "a".repeat(MAX_STRING_BYTES + 1);
        assert_eq!(clean(&over).len(), MAX_STRING_BYTES);
        // Replacements count at their encoded size (U+FFFD is 3 bytes).
        let ctl = "\u{1}".repeat(400);
        assert!(clean(&ctl).len() <= MAX_STRING_BYTES);
    }

    #[test]
    fn long_lists_keep_the_first_entries_and_count_the_rest() {
        let mut v: Vec<String> = (0..1000).map(|i| format!("h{i}")).collect();
        clean_list(&mut v);
        assert_eq!(v.len(), MAX_LIST);
        assert_eq!(v[0], "h0");
        assert_eq!(v[MAX_LIST - 2], "h62");
        assert_eq!(v[MAX_LIST - 1], "… 937 more");
    }

    #[test]
    fn lists_are_deduplicated_in_order() {
        let mut v = vec!["b".to_string(), "a".into(), "b".into()];
        clean_list(&mut v);
        assert_eq!(v, ["b", "a"]);
        let mut exactly: Vec<String> = (0..MAX_LIST).map(|i| i.to_string()).collect();
        clean_list(&mut exactly);
        assert_eq!(exactly.len(), MAX_LIST);
        assert_eq!(exactly[MAX_LIST - 1], "63");
    }
}
