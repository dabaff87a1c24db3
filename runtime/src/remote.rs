//! Remote homes for artifacts (object storage), behind [`ObjectRemote`].
//!
//! The local store stays the working copy: steps read views of local
//! objects and write into local staging folders. A remote adds a second,
//! shared home: every object the store creates is pushed to it before the
//! records that name it commit (as it is made durable locally), and an
//! object the local store lacks is fetched from it (and verified) before
//! the store reports it missing. With records shared too (a
//! [`crate::records::Records`] backend several hosts use), a step one host
//! computed is a cache hit on another. [`FolderRemote`] is the reference
//! implementation (a folder, e.g. a network mount); an S3-style bucket
//! implements the same three calls.

use crate::digest::Digest;
use std::path::{Path, PathBuf};
pub use weir_core::remote::ObjectRemote;

/// A remote in a folder: `objects/<2 hex>/<64 hex>`, written by copy to a
/// temporary name and rename.
#[derive(Debug, Clone)]
pub struct FolderRemote {
    root: PathBuf,
}

impl FolderRemote {
    /// A remote in `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> anyhow::Result<FolderRemote> {
        let root = root.into();
        std::fs::create_dir_all(root.join("objects"))
            .map_err(|e| anyhow::anyhow!("cannot create remote {}: {e}", root.display()))?;
        Ok(FolderRemote { root })
    }

    fn path(&self, d: &Digest) -> PathBuf {
        let hex = d.to_hex();
        self.root.join("objects").join(&hex[..2]).join(hex)
    }
}

impl ObjectRemote for FolderRemote {
    fn put(&self, d: &Digest, local: &Path) -> anyhow::Result<()> {
        // Always (re)written: a damaged copy left by an earlier writer heals.
        let dest = self.path(d);
        let dir = dest.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), d.to_hex()));
        std::fs::copy(local, &tmp).map_err(|e| {
            anyhow::anyhow!("uploading {} to {}: {e}", d.short(), self.root.display())
        })?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &dest)?;
        Ok(())
    }

    fn get(&self, d: &Digest, dest: &Path) -> anyhow::Result<bool> {
        match std::fs::copy(self.path(d), dest) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(anyhow::anyhow!(
                "downloading {} from {}: {e}",
                d.short(),
                self.root.display()
            )),
        }
    }
}
