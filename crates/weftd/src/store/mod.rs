//! What a router keeps across restarts: its peer name, its direct targets, and IPAM's ring and
//! the addresses its containers hold.
//!
//! Stored in one redb database file under the state dir. redb commits are atomic, so a crash
//! mid-write leaves either the old or the new value, never a torn one.
//!
//! IPAM writes on every allocation, and an allocation must not wait for the disk: its records
//! go to a write-ahead journal beside the database and reach redb a moment later
//! ([`journal`]). Everything else is committed with `Durability::Immediate`.
//!
//! A damaged file is another matter: redb 2 trusts its header, and a truncated file or a
//! flipped bit there trips an assertion or an index panic inside redb (newer major versions
//! still panic on some flipped bits), which the release build turns into an abort at every
//! start. So before the router opens an existing file, a process of its own ([`Check`], entry
//! point [`check_main`]) reads a copy of it into memory and opens, verifies and reads that with
//! redb: if redb errs, reports bad checksums or dies, the file is corrupt, and
//! [`StoreError::Corrupt`] names it and says what to do. The file itself is never changed,
//! moved or deleted on that path: what it holds (the IPAM ring, later) stays for a backup or
//! for the operator to inspect. A new database is built under a temporary name and renamed into
//! place, so an empty `weft.db` can only be damage, and is reported as such.

use std::ffi::OsString;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;

use redb::backends::InMemoryBackend;
use redb::{Database, Durability, ReadableTable as _, StorageBackend, TableDefinition};
use weft_wire::PeerName;

mod journal;
use journal::Journal;

const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const KEY_PEER_NAME: &str = "peer-name";
const KEY_DIRECT_PEERS: &str = "direct-peers";
/// The sequence number of the last journal frame redb holds.
const KEY_JOURNAL_SEQ: &str = "journal-seq";
/// The journaled records, each written whole: keys [`IPAM_RING`], [`IPAM_OWNED`] and
/// [`DNS_ENTRIES`]. (The table's name is from when IPAM's were the only ones.)
const IPAM: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("ipam");
/// The IPAM record of our peer name and the ring.
pub const IPAM_RING: &str = "ring";
/// The IPAM record of the addresses each ident holds.
pub const IPAM_OWNED: &str = "owned";
/// The DNS record of the entries we registered.
pub const DNS_ENTRIES: &str = "dns-entries";

/// The environment variable that names the file a checking process verifies.
pub const CHECK_ENV: &str = "WEFT_CHECK_STATE_DB";

/// redb's file magic, the first bytes of every database it has finished creating.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
/// redb's header: the magic, the god byte, the layout and two transaction slots.
const REDB_HEADER_LEN: usize = 320;
/// Offset of redb's god byte, and its "not closed cleanly, repair on open" bit.
const REDB_GOD_BYTE: usize = 9;
const REDB_RECOVERY_REQUIRED: u8 = 2;

/// Exit codes of the checking process; any other status (an abort, a panic) means corrupt.
const CHECK_CORRUPT: u8 = 2;
const CHECK_UNREADABLE: u8 = 3;
/// How long the check may take; a sound file takes milliseconds.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// The file is damaged; it was left exactly as it was.
    #[error(
        "state database {0} is corrupt ({1}); move it aside to start with fresh state, \
         or restore it from a backup"
    )]
    Corrupt(PathBuf, String),
    /// The checking process could not be run, or could not read the file.
    #[error("cannot check state database {0}: {1}")]
    Check(PathBuf, String),
}

/// How an existing database file is checked before the router opens it: a command (program
/// and arguments) that, with [`CHECK_ENV`] naming the file, runs [`check_main`] and exits
/// with its code. `weft` passes itself with its hidden `check-state-db` command.
#[derive(Debug, Clone)]
pub struct Check {
    argv: Vec<OsString>,
}

impl Check {
    /// A check that runs `program` with `args`.
    pub fn command(program: impl Into<OsString>, args: &[&str]) -> Self {
        let mut argv = vec![program.into()];
        argv.extend(args.iter().map(OsString::from));
        Self { argv }
    }

    /// Runs the check on `path`: `Ok` if redb reads it cleanly, [`StoreError::Corrupt`] if
    /// not. Never writes to `path`.
    fn run(&self, path: &Path) -> Result<(), StoreError> {
        let check_err = |e: String| StoreError::Check(path.to_path_buf(), e);
        let (program, args) = self
            .argv
            .split_first()
            .ok_or_else(|| check_err("no check command".into()))?;
        let mut child = Command::new(program)
            .args(args)
            .env(CHECK_ENV, path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| check_err(format!("running {}: {e}", program.to_string_lossy())))?;
        // A damaged tree could send redb round in circles: give up on it after a while.
        let deadline = Instant::now() + CHECK_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(StoreError::Corrupt(
                        path.to_path_buf(),
                        format!("reading it did not finish in {}s", CHECK_TIMEOUT.as_secs()),
                    ));
                }
                Err(e) => return Err(check_err(e.to_string())),
            }
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let said = stderr
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        match status.code() {
            Some(0) => Ok(()),
            Some(c) if c == i32::from(CHECK_UNREADABLE) => Err(check_err(said.to_owned())),
            _ if said.is_empty() => Err(StoreError::Corrupt(
                path.to_path_buf(),
                format!("reading it failed: {status}"),
            )),
            _ => Err(StoreError::Corrupt(path.to_path_buf(), said.to_owned())),
        }
    }
}

/// The router's persistent state.
#[derive(Debug)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
    /// `None` only while the store is dropped.
    journal: Option<Journal>,
}

impl Store {
    /// The database file inside `state_dir`.
    pub fn file(state_dir: &Path) -> PathBuf {
        state_dir.join("weft.db")
    }

    /// Opens the database in `state_dir`, creating it if there is none. An existing file is
    /// first verified by `check` in a process of its own; a damaged one is reported as
    /// [`StoreError::Corrupt`] and left untouched.
    pub fn open(state_dir: &Path, check: &Check) -> Result<Self, StoreError> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| StoreError::Dir(state_dir.to_path_buf(), e))?;
        let path = Self::file(state_dir);
        let db_err = |e: &dyn std::fmt::Display| StoreError::Db(path.clone(), e.to_string());
        match std::fs::symlink_metadata(&path) {
            Ok(_) => check.run(&path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(&path)?,
            Err(e) => return Err(db_err(&e)),
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| db_err(&e))?;
        let db = Arc::new(
            Database::builder()
                .create_file(file)
                .map_err(|e| db_err(&e))?,
        );
        let journal = Self::replay(&db, &path)?;
        Ok(Self {
            db,
            path,
            journal: Some(journal),
        })
    }

    /// Commits what the journal holds beyond what redb has, empties it, and starts it.
    fn replay(db: &Arc<Database>, path: &Path) -> Result<Journal, StoreError> {
        let db_err = |e: &dyn std::fmt::Display| StoreError::Db(path.to_path_buf(), e.to_string());
        let seq = get_in(db, META, KEY_JOURNAL_SEQ)
            .map_err(|e| db_err(&e))?
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes);
        let paths = journal::files(path);
        let (records, last) = journal::replay(&paths, seq)
            .map_err(|(file, why)| StoreError::Corrupt(file, format!("journal: {why}")))?;
        if last > seq {
            commit_records(db, &records, last).map_err(|e| db_err(&e))?;
            tracing::info!(
                "[store]: replayed {} records from the journal (to frame {last})",
                records.len()
            );
        }
        let [a, b] = paths.each_ref().map(|p| {
            journal::open_file(p)
                .and_then(|f| f.set_len(0).map(|()| f))
                .map_err(|e| StoreError::Db(p.clone(), e.to_string()))
        });
        let files = [a?, b?];
        Journal::start(
            files,
            last,
            Box::new(DbSink(db.clone())),
            journal::CHECKPOINT_AFTER,
        )
        .map_err(|e| db_err(&e))
    }

    /// Removes the state database and its journal from `state_dir`.
    pub fn remove_files(state_dir: &Path) {
        let db = Self::file(state_dir);
        for f in journal::files(&db) {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_file(db);
    }

    /// Builds an empty database beside `path` and renames it into place, so that `path` is
    /// never an empty or half-initialised file.
    fn create(path: &Path) -> Result<(), StoreError> {
        let db_err = |e: &dyn std::fmt::Display| StoreError::Db(path.to_path_buf(), e.to_string());
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".new-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let built = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| db_err(&e))
            .and_then(|f| Database::builder().create_file(f).map_err(|e| db_err(&e)))
            .and_then(|db| {
                drop(db);
                std::fs::rename(&tmp, path).map_err(|e| db_err(&e))
            });
        if built.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        built
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db(self.path.clone(), e.to_string())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_in(META, key)
    }

    fn get_in(
        &self,
        def: TableDefinition<'_, &str, &[u8]>,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        get_in(&self.db, def, key).map_err(|e| self.err(e))
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.set_durability(Durability::Immediate);
        {
            let mut table = tx.open_table(META).map_err(|e| self.err(e))?;
            table.insert(key, value).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    fn journal(&self) -> Result<&Journal, StoreError> {
        self.journal.as_ref().ok_or_else(|| self.err("closed"))
    }

    /// A journaled record ([`IPAM_RING`], [`IPAM_OWNED`], [`DNS_ENTRIES`]), as last written.
    pub fn record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.journal()?.pending(key) {
            Some(v) => Ok(Some(v)),
            None => self.get_in(IPAM, key),
        }
    }

    /// Writes a journaled record: in the kernel when this returns, on disk moments later (see
    /// the module documentation).
    pub fn set_record(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.set_records(&[(key, value.to_vec())])
    }

    /// Writes records at once (one journal frame), as [`Store::set_record`] does one.
    pub fn set_records(&self, records: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        let pairs: Vec<(&str, &[u8])> = records.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        self.journal()?.append(&pairs).map_err(|e| self.err(e))
    }

    /// `value` as JSON, for a record.
    pub fn json(&self, value: &impl serde::Serialize) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(value).map_err(|e| self.err(e))
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

impl Drop for Store {
    /// Checkpoints the journal; emptied journal files are removed, so a cleanly stopped
    /// router leaves the database alone in its state dir.
    fn drop(&mut self) {
        drop(self.journal.take());
        for f in journal::files(&self.path) {
            if std::fs::metadata(&f).is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(f);
            }
        }
    }
}

fn get_in(
    db: &Database,
    def: TableDefinition<'_, &str, &[u8]>,
    key: &str,
) -> Result<Option<Vec<u8>>, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let tx = db.begin_read().map_err(|x| e(&x))?;
    let table = match tx.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(x) => return Err(e(&x)),
    };
    let v = table.get(key).map_err(|x| e(&x))?;
    Ok(v.map(|v| v.value().to_vec()))
}

/// Commits IPAM records and the journal frame they reach, durably, in one transaction.
fn commit_records(db: &Database, records: &journal::Records, seq: u64) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let mut tx = db.begin_write().map_err(|x| e(&x))?;
    tx.set_durability(Durability::Immediate);
    {
        let mut table = tx.open_table(IPAM).map_err(|x| e(&x))?;
        for (key, value) in records {
            table
                .insert(key.as_str(), value.as_slice())
                .map_err(|x| e(&x))?;
        }
        let mut meta = tx.open_table(META).map_err(|x| e(&x))?;
        meta.insert(KEY_JOURNAL_SEQ, seq.to_le_bytes().as_slice())
            .map_err(|x| e(&x))?;
    }
    tx.commit().map_err(|x| e(&x))
}

/// Checkpoints go to the database.
struct DbSink(Arc<Database>);

impl journal::Sink for DbSink {
    fn commit(&self, records: &journal::Records, seq: u64) -> Result<(), String> {
        commit_records(&self.0, records, seq)
    }
}

/// Why a file failed the check.
enum Fault {
    Corrupt(String),
    Unreadable(String),
}

/// The checking process: verifies the file [`CHECK_ENV`] names and returns the exit code
/// (0 sound, 2 corrupt, 3 unreadable), with the reason as the last line on stderr. redb may
/// abort it instead; the hook set here first puts the panic's message on one line.
pub fn check_main() -> u8 {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        // The assertion a truncated file trips, in words.
        if msg.contains("raw_file_len()? >= header.layout().len()") {
            eprintln!("truncated: shorter than its header says");
        } else {
            eprintln!("redb failed reading it: {}", msg.replace('\n', " "));
        }
    }));
    let Some(path) = std::env::var_os(CHECK_ENV) else {
        eprintln!("{CHECK_ENV} is not set");
        return CHECK_UNREADABLE;
    };
    match verify(Path::new(&path)) {
        Ok(()) => 0,
        Err(Fault::Corrupt(why)) => {
            eprintln!("{why}");
            CHECK_CORRUPT
        }
        Err(Fault::Unreadable(why)) => {
            eprintln!("{why}");
            CHECK_UNREADABLE
        }
    }
}

/// Reads `path` into memory and has redb open, verify and read that copy; the file is only
/// read. May panic inside redb: run it in a process of its own.
fn verify(path: &Path) -> Result<(), Fault> {
    let bytes = std::fs::read(path).map_err(|e| Fault::Unreadable(e.to_string()))?;
    if bytes.is_empty() {
        return Err(Fault::Corrupt("the file is empty".into()));
    }
    if bytes.len() < REDB_HEADER_LEN || bytes[..REDB_MAGIC.len()] != REDB_MAGIC {
        return Err(Fault::Corrupt("not a redb database".into()));
    }
    let recovering = bytes[REDB_GOD_BYTE] & REDB_RECOVERY_REQUIRED != 0;
    let corrupt = |e: &dyn std::fmt::Display| Fault::Corrupt(e.to_string());
    let backend = InMemoryBackend::new();
    let len = u64::try_from(bytes.len()).map_err(|e| corrupt(&e))?;
    backend.set_len(len).map_err(|e| corrupt(&e))?;
    backend.write(0, &bytes).map_err(|e| corrupt(&e))?;
    let mut db = Database::builder()
        .create_with_backend(backend)
        .map_err(|e| corrupt(&e))?;
    // `false` means redb had to repair the copy: expected after a crash (the real open
    // repairs the same way), but in a cleanly closed file it means damaged pages.
    if !db.check_integrity().map_err(|e| corrupt(&e))? && !recovering {
        return Err(Fault::Corrupt("page checksums do not match".into()));
    }
    let tx = db.begin_read().map_err(|e| corrupt(&e))?;
    let table = match tx.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(corrupt(&e)),
    };
    for entry in table.iter().map_err(|e| corrupt(&e))? {
        let (k, v) = entry.map_err(|e| corrupt(&e))?;
        // Touch every byte redb hands out, as the router will.
        let _ = (k.value().len(), v.value().len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checking process of these tests: this test binary, running only
    /// [`check_process_entry`].
    fn check() -> Check {
        let exe = std::env::current_exe().unwrap();
        Check::command(
            exe,
            &[
                "--exact",
                "store::tests::check_process_entry",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ],
        )
    }

    #[test]
    #[ignore = "the checking process that the other tests start"]
    fn check_process_entry() {
        if std::env::var_os(CHECK_ENV).is_some() {
            std::process::exit(i32::from(check_main()));
        }
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("weft-store-test-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A state dir holding a database with a name and targets in it.
    fn populated(tag: &str) -> TempDir {
        let dir = TempDir::new(tag);
        let s = Store::open(&dir.0, &check()).unwrap();
        s.set_peer_name(PeerName(0x0200_0000_0001)).unwrap();
        s.set_direct_peers(&["10.0.0.1".into(), "h2:6783".into()])
            .unwrap();
        dir
    }

    #[test]
    fn survives_reopen() {
        let dir = TempDir::new("reopen");
        {
            let s = Store::open(&dir.0, &check()).unwrap();
            assert_eq!(s.peer_name().unwrap(), None);
            s.set_peer_name(PeerName(0x0200_0000_0001)).unwrap();
            s.set_direct_peers(&["10.0.0.1".into(), "h2:6783".into()])
                .unwrap();
        }
        let s = Store::open(&dir.0, &check()).unwrap();
        assert_eq!(s.peer_name().unwrap(), Some(PeerName(0x0200_0000_0001)));
        assert_eq!(s.direct_peers().unwrap(), vec!["10.0.0.1", "h2:6783"]);
        // Closed, nothing but the database is left in the state dir.
        drop(s);
        let names: Vec<_> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("weft.db")]);
    }

    /// Where [`killed_writer_entry`] writes, when it runs as a child process.
    const WRITER_ENV: &str = "WEFT_TEST_IPAM_WRITER";

    #[test]
    #[ignore = "the killed writer that ipam_records_survive_a_killed_writer starts"]
    fn killed_writer_entry() {
        let Some(dir) = std::env::var_os(WRITER_ENV) else {
            return;
        };
        let s = Store::open(Path::new(&dir), &check()).unwrap();
        for i in 0..50u32 {
            s.set_record(IPAM_OWNED, &i.to_le_bytes()).unwrap();
        }
        s.set_record(IPAM_RING, b"ring").unwrap();
        // As `kill -9` would: no destructor, no flush, no unlock.
        std::process::abort();
    }

    #[test]
    fn ipam_records_survive_a_killed_writer() {
        let dir = TempDir::new("ipam");
        let status = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::tests::killed_writer_entry",
                "--ignored",
                "--test-threads=1",
                "-q",
            ])
            .env(WRITER_ENV, &dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the writer should have aborted");
        let s = Store::open(&dir.0, &check()).unwrap();
        assert_eq!(s.record(IPAM_RING).unwrap().as_deref(), Some(&b"ring"[..]));
        assert_eq!(
            s.record(IPAM_OWNED).unwrap(),
            Some(49u32.to_le_bytes().to_vec())
        );
    }

    #[test]
    fn journal_frames_redb_holds_are_not_replayed() {
        let dir = TempDir::new("stale");
        let db = Store::file(&dir.0);
        let [j0, _] = journal::files(&db);
        {
            let s = Store::open(&dir.0, &check()).unwrap();
            s.set_record(IPAM_OWNED, b"old").unwrap();
            // Read back before any checkpoint: from the journal.
            assert_eq!(s.record(IPAM_OWNED).unwrap().as_deref(), Some(&b"old"[..]));
            // What a lost truncation leaves behind: the frame, after redb has it.
            let frame = std::fs::read(&j0).unwrap();
            s.set_record(IPAM_OWNED, b"new").unwrap();
            drop(s);
            std::fs::write(&j0, frame).unwrap();
        }
        let s = Store::open(&dir.0, &check()).unwrap();
        assert_eq!(s.record(IPAM_OWNED).unwrap().as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn records_reach_the_database_after_a_checkpoint() {
        let dir = TempDir::new("checkpoint");
        let s = Store::open(&dir.0, &check()).unwrap();
        s.set_record(IPAM_RING, b"ring").unwrap();
        let deadline = Instant::now() + journal::CHECKPOINT_AFTER * 10;
        while s.get_in(IPAM, IPAM_RING).unwrap().is_none() {
            assert!(Instant::now() < deadline, "no checkpoint");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The file that held the frame is emptied once redb has it.
        let sizes: Vec<u64> = journal::files(&Store::file(&dir.0))
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .collect();
        assert_eq!(sizes, vec![0, 0]);
    }

    #[test]
    fn unclean_shutdown_is_not_corruption() {
        // What a killed router leaves: the "repair on open" bit set. redb repairs, nothing is
        // lost, and the check passes.
        let dir = populated("unclean");
        let file = Store::file(&dir.0);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[REDB_GOD_BYTE] |= REDB_RECOVERY_REQUIRED;
        std::fs::write(&file, &bytes).unwrap();
        let s = Store::open(&dir.0, &check()).unwrap();
        assert_eq!(s.peer_name().unwrap(), Some(PeerName(0x0200_0000_0001)));
        assert_eq!(s.direct_peers().unwrap(), vec!["10.0.0.1", "h2:6783"]);
    }

    /// Damages the file with `damage`, then expects a corrupt report naming it, with `why`
    /// in the reason, and the file byte for byte as it was.
    fn assert_reported(tag: &str, damage: impl FnOnce(&mut Vec<u8>), why: &str) {
        let dir = populated(tag);
        let file = Store::file(&dir.0);
        let mut bytes = std::fs::read(&file).unwrap();
        damage(&mut bytes);
        std::fs::write(&file, &bytes).unwrap();
        let err = Store::open(&dir.0, &check()).unwrap_err();
        let msg = err.to_string();
        println!("{tag}: {msg}");
        assert!(matches!(err, StoreError::Corrupt(..)), "{tag}: {msg}");
        let want = format!("state database {} is corrupt (", file.display());
        assert!(msg.starts_with(&want), "{tag}: {msg}");
        assert!(
            msg.ends_with(
                "); move it aside to start with fresh state, or restore it from a backup"
            ),
            "{tag}: {msg}"
        );
        assert!(msg.contains(why), "{tag}: {msg} lacks {why:?}");
        assert!(!msg.contains('\n'), "{tag}: one line: {msg}");
        assert_eq!(std::fs::read(&file).unwrap(), bytes, "{tag}: file changed");
    }

    #[test]
    fn zero_length_file_is_reported() {
        assert_reported("zero", Vec::clear, "the file is empty");
    }

    #[test]
    fn truncated_file_is_reported() {
        // Cut anywhere past the header: redb 2 asserts the file is as long as its layout.
        for keep in [4096, 100_000] {
            assert_reported(
                &format!("trunc{keep}"),
                |b| b.truncate(keep),
                "truncated: shorter than its header says",
            );
        }
        assert_reported("trunc100", |b| b.truncate(100), "not a redb database");
    }

    #[test]
    fn garbage_file_is_reported() {
        assert_reported(
            "garbage",
            |b| {
                let mut x: u32 = 0x1234_5678;
                for byte in b.iter_mut() {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    *byte = x.to_be_bytes()[0];
                }
            },
            "not a redb database",
        );
    }

    #[test]
    fn bit_flips_are_reported() {
        // Header fields redb 2 trusts blindly: the region layout (an assertion) and a
        // transaction slot's root page (an index panic); then a stored value's page, which
        // only the checksums catch.
        assert_reported("flip16", |b| b[16] ^= 0x01, "shorter than its header says");
        assert_reported(
            "flip32",
            |b| b[32] ^= 0x08,
            "redb failed reading it: index out of bounds",
        );
        assert_reported(
            "flipvalue",
            |b| {
                let at = b.windows(8).rposition(|w| w == b"10.0.0.1").unwrap();
                b[at] ^= 0x01;
            },
            "corrupted",
        );
    }

    #[test]
    fn unchecked_file_is_not_opened() {
        // A check that cannot run is an error, not a pass.
        let dir = populated("nocheck");
        let bad = Check::command("/nonexistent/weft", &[]);
        let err = Store::open(&dir.0, &bad).unwrap_err();
        assert!(matches!(err, StoreError::Check(..)), "{err}");
    }
}
