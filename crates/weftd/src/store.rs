//! What a router keeps across restarts: its peer name and its direct targets.
//!
//! Stored in one redb database file under the state dir. redb commits are atomic, so a crash
//! mid-write leaves either the old or the new value, never a torn one.

use std::path::{Path, PathBuf};

use redb::{Database, TableDefinition};
use weft_wire::PeerName;

const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const KEY_PEER_NAME: &str = "peer-name";
const KEY_DIRECT_PEERS: &str = "direct-peers";

/// Errors reading or writing the state database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The state directory cannot be created.
    #[error("cannot create state dir {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    /// The database cannot be opened or written.
    #[error("state database {0}: {1}")]
    Db(PathBuf, String),
}

/// The router's persistent state.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// The database file inside `state_dir`.
    pub fn file(state_dir: &Path) -> PathBuf {
        state_dir.join("weft.db")
    }

    /// Opens (creating if needed) the database in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| StoreError::Dir(state_dir.to_path_buf(), e))?;
        let path = Self::file(state_dir);
        let db =
            Database::create(&path).map_err(|e| StoreError::Db(path.clone(), e.to_string()))?;
        Ok(Self { db, path })
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db(self.path.clone(), e.to_string())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = match tx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        let v = table.get(key).map_err(|e| self.err(e))?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = tx.open_table(META).map_err(|e| self.err(e))?;
            table.insert(key, value).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The persisted peer name, if any (and if well-formed).
    pub fn peer_name(&self) -> Result<Option<PeerName>, StoreError> {
        Ok(self
            .get(KEY_PEER_NAME)?
            .and_then(|b| PeerName::from_bytes(&b)))
    }

    /// Persists the peer name.
    pub fn set_peer_name(&self, name: PeerName) -> Result<(), StoreError> {
        self.put(KEY_PEER_NAME, &name.to_bytes())
    }

    /// The persisted direct targets (for `--resume`).
    pub fn direct_peers(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .get(KEY_DIRECT_PEERS)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default())
    }

    /// Persists the direct targets.
    pub fn set_direct_peers(&self, peers: &[String]) -> Result<(), StoreError> {
        let b = serde_json::to_vec(peers).map_err(|e| self.err(e))?;
        self.put(KEY_DIRECT_PEERS, &b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen() {
        let dir = std::env::temp_dir().join(format!("weft-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let s = Store::open(&dir).unwrap();
            assert_eq!(s.peer_name().unwrap(), None);
            s.set_peer_name(PeerName(0x0200_0000_0001)).unwrap();
            s.set_direct_peers(&["10.0.0.1".into(), "h2:6783".into()])
                .unwrap();
        }
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.peer_name().unwrap(), Some(PeerName(0x0200_0000_0001)));
        assert_eq!(s.direct_peers().unwrap(), vec!["10.0.0.1", "h2:6783"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
