//! The secret scanner: proves that credentials a test sent never reached what Warden keeps (its
//! data directory, its records, its log) or what it ships (manifests).
//!
//! A record store (`records.db`) is searched decoded as well as raw: its blocks are
//! LZ4-compressed, and a secret can hide in a back-reference of the compressed bytes.

use std::path::{Path, PathBuf};

/// Every occurrence of any of `secrets` in the files under `dir` (recursively), as (file,
/// secret) pairs, and how many files were searched.
pub fn find_in_files(dir: &Path, secrets: &[&str]) -> (Vec<(PathBuf, String)>, usize) {
    let mut found = Vec::new();
    let mut searched = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for path in entries.flatten().map(|entry| entry.path()) {
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let Ok(mut bytes) = std::fs::read(&path) else {
                continue;
            };
            searched += 1;
            if path.file_name().is_some_and(|n| n == "records.db") {
                let bodies = warden_collector::store::decoded_block_bodies(&path)
                    .unwrap_or_else(|e| panic!("decode the blocks of {}: {e}", path.display()));
                assert!(
                    !bodies.is_empty(),
                    "{} holds no block to search",
                    path.display()
                );
                bodies.iter().for_each(|b| bytes.extend_from_slice(b));
            }
            for secret in secrets {
                if contains(&bytes, secret) {
                    found.push((path.clone(), secret.to_string()));
                }
            }
        }
    }
    (found, searched)
}

/// Asserts that none of `secrets` occurs in any file under `dir` (a collector's data
/// directory), and that there was at least one file to search.
pub fn assert_not_in_files(dir: &Path, secrets: &[&str]) {
    let (found, searched) = find_in_files(dir, secrets);
    assert!(searched > 0, "no file to search in {}", dir.display());
    assert!(found.is_empty(), "secrets in the files: {found:#?}");
}

/// Asserts that none of `secrets` occurs in `text`, which is `what` (a record, a log, a
/// manifest).
pub fn assert_not_in_text(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{secret} found in {what}:\n{text}");
    }
}

fn contains(bytes: &[u8], secret: &str) -> bool {
    bytes
        .windows(secret.len())
        .any(|window| window == secret.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_in_a_nested_file_is_found_and_named_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pki")).unwrap();
        std::fs::write(dir.path().join("pki/key.pem"), b"xx tok-123 xx").unwrap();
        std::fs::write(dir.path().join("clean"), b"nothing here").unwrap();
        let (found, searched) = find_in_files(dir.path(), &["tok-123", "absent"]);
        assert_eq!(searched, 2);
        assert_eq!(
            found,
            vec![(dir.path().join("pki/key.pem"), "tok-123".to_string())]
        );
    }

    #[test]
    #[should_panic(expected = "no file to search")]
    fn an_empty_directory_proves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_not_in_files(dir.path(), &["tok-123"]);
    }

    #[test]
    #[should_panic(expected = "pw-555 found in the log")]
    fn a_secret_in_a_text_is_named_with_where_it_was() {
        assert_not_in_text("the log", "login with pw-555", &["pw-555"]);
    }
}
