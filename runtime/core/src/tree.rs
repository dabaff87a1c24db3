//! Folder artifacts as Merkle trees.
//!
//! A tree object is text: the header line `weir-tree-v1`, then one line per
//! entry, sorted by name: `f <digest> <bytes> <name>` for a file and
//! `d <digest> <bytes> <name>` for a folder (bytes = all file bytes below it).
//! Its digest is the blake3 of that text, like any other object, so a folder's
//! digest changes exactly when a name, a file's content or the shape changes.

use crate::digest::Digest;
use std::fmt::Write as _;

const HEADER: &str = "weir-tree-v1\n";

/// What a tree entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file; its digest names a blob.
    File,
    /// A folder; its digest names another tree.
    Folder,
}

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file or folder name (one path component).
    pub name: String,
    /// File or folder.
    pub kind: EntryKind,
    /// The blob or tree digest.
    pub digest: Digest,
    /// Bytes of the file, or of all files below the folder.
    pub bytes: u64,
}

/// Why bytes are not a tree object in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// The bytes are not UTF-8 text.
    #[error("tree object is not UTF-8")]
    NotUtf8,
    /// The first line is not the tree header.
    #[error("object is not a tree (missing 'weir-tree-v1' header)")]
    NoHeader,
    /// A line that is not `kind digest bytes name`.
    #[error("tree line {line}: malformed entry {text:?}")]
    BadEntry {
        /// The line's number in the object (the header is line 1).
        line: usize,
        /// The line.
        text: String,
    },
    /// Entries out of order, or a name twice.
    #[error("tree entries are not sorted and unique")]
    Unsorted,
    /// A valid tree, written differently from its one encoding.
    #[error("tree object is not in canonical form")]
    NotCanonical,
}

/// A folder's listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// Entries sorted by name.
    pub entries: Vec<Entry>,
}

/// Why a name cannot be stored in a tree.
pub fn check_entry_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name == "." || name == ".." {
        return Err("empty, '.' and '..' are not file names");
    }
    if name.chars().any(|c| c == '/' || c.is_control()) {
        return Err("file names cannot hold '/' or control characters");
    }
    Ok(())
}

impl Tree {
    /// Sorts the entries; call before [`Tree::encode`] when built by hand.
    pub fn sort(&mut self) {
        self.entries.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Total bytes of all files in the tree.
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    /// The canonical encoding (entries must be sorted and names valid).
    pub fn encode(&self) -> Vec<u8> {
        let mut s = String::with_capacity(HEADER.len() + self.entries.len() * 90);
        s.push_str(HEADER);
        for e in &self.entries {
            let k = match e.kind {
                EntryKind::File => 'f',
                EntryKind::Folder => 'd',
            };
            // Writing to a String cannot fail.
            let _ = writeln!(s, "{k} {} {} {}", e.digest, e.bytes, e.name);
        }
        s.into_bytes()
    }

    /// Parses a tree object, rejecting anything not in canonical form.
    pub fn decode(bytes: &[u8]) -> Result<Tree, TreeError> {
        let text = std::str::from_utf8(bytes).map_err(|_| TreeError::NotUtf8)?;
        let body = text.strip_prefix(HEADER).ok_or(TreeError::NoHeader)?;
        let mut entries = Vec::new();
        for (n, line) in body.lines().enumerate() {
            let bad = || TreeError::BadEntry {
                line: n + 2,
                text: line.to_string(),
            };
            let mut parts = line.splitn(4, ' ');
            let kind = match parts.next() {
                Some("f") => EntryKind::File,
                Some("d") => EntryKind::Folder,
                _ => return Err(bad()),
            };
            let digest: Digest = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
            let bytes: u64 = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
            let name = parts.next().ok_or_else(bad)?.to_string();
            check_entry_name(&name).map_err(|_| bad())?;
            entries.push(Entry {
                name,
                kind,
                digest,
                bytes,
            });
        }
        if !entries.windows(2).all(|w| w[0].name < w[1].name) {
            return Err(TreeError::Unsorted);
        }
        let tree = Tree { entries };
        // One encoding per tree: no CRLF, leading zeros, upper-case hex or
        // missing final newline (the object's name is the digest of these bytes).
        if tree.encode() != bytes {
            return Err(TreeError::NotCanonical);
        }
        Ok(tree)
    }

    /// The tree's digest.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let mut t = Tree {
            entries: vec![
                Entry {
                    name: "b.csv".into(),
                    kind: EntryKind::File,
                    digest: Digest::of(b"x"),
                    bytes: 1,
                },
                Entry {
                    name: "a dir".into(),
                    kind: EntryKind::Folder,
                    digest: Tree::default().digest(),
                    bytes: 0,
                },
            ],
        };
        t.sort();
        let back = Tree::decode(&t.encode()).unwrap();
        assert_eq!(back, t);
        assert_ne!(t.digest(), Tree::default().digest());
        assert!(Tree::decode(b"hello").is_err());
    }
}
