//! [`ObjectRemote`]: a second, shared home for store objects (object
//! storage), the boundary a backend implements. The runtime pushes every
//! object it makes durable and fetches (and verifies) what its local store
//! lacks; `weir_runtime::remote` has the reference implementation.

use crate::digest::Digest;
use std::path::Path;

/// A second home for store objects. Implementations must make `put`
/// atomic (an object is either absent or complete) and idempotent.
pub trait ObjectRemote: Send + Sync {
    /// Uploads the object `d` from the local file `local`.
    fn put(&self, d: &Digest, local: &Path) -> anyhow::Result<()>;
    /// Downloads object `d` into `dest` (a new file); `false` if the remote
    /// does not have it. The store verifies the bytes.
    fn get(&self, d: &Digest, dest: &Path) -> anyhow::Result<bool>;
}
