//! Run records: the types and traits are `weir-core`'s
//! ([`weir_core::records`], re-exported here); [`SqliteRecords`] is the
//! embedded backend (one SQLite file in WAL mode, `weir.db` in the store).

mod sqlite;

pub use sqlite::SqliteRecords;
pub use weir_core::records::*;
