//! The IPAM records' write-ahead journal: what makes an allocation durable against a killed
//! router without waiting for the disk.
//!
//! An allocation must be written before its address is handed out (a router killed after
//! answering must not give the address again), and must not wait for an fsync (p50 ≤ 0.2 ms;
//! one fsync here takes 0.4–0.7 ms). redb cannot give both: a commit that reaches the kernel
//! without a sync must still wait for the previous commit's sync (the write barrier redb asks
//! of an eventual sync), and its unsynced commits (`Durability::None`) are lost with the
//! process. So a record is appended to a journal file with one `write` (in the kernel when it
//! returns: a `kill -9` loses nothing), and a thread of the store's own checkpoints the latest
//! value of each record into redb with `Durability::Immediate` a moment later.
//!
//! Two files take turns: a checkpoint switches appends to the other (emptied) file, commits
//! what the switched-out one holds, and only then empties it. Each frame carries a sequence
//! number and redb keeps the last one it holds ([`super::JOURNAL_SEQ`]), so replay at open
//! applies exactly the frames redb has not seen, in order, whatever order the two files, a lost
//! truncation or a torn last frame leave them in. A power loss may lose the last records not yet
//! checkpointed (at most [`CHECKPOINT_AFTER`]); it never corrupts redb, which only ever sees
//! immediate commits.
//!
//! Frame: `len u32 | crc32 u32 | seq u64 | payload` (little-endian), `crc32` over `seq` and
//! the payload; payload: per record `key_len u16 | key | value_len u32 | value`. Hand-written:
//! it is a dozen lines, and no journal crate fits beside redb.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long after the first record a checkpoint follows.
pub(super) const CHECKPOINT_AFTER: Duration = Duration::from_secs(1);
/// A journal this large is checkpointed at once.
const CHECKPOINT_BYTES: u64 = 4 << 20;
const HEADER: usize = 16;
/// A frame larger than this is not one we wrote: the file is damaged from here on.
const MAX_FRAME: usize = 256 << 20;

/// Records by key: the latest value of each.
pub(super) type Records = BTreeMap<String, Vec<u8>>;

/// Where checkpoints go: commits `records` and the sequence number they reach, atomically and
/// durably.
pub(super) trait Sink: Send + Sync + 'static {
    fn commit(&self, records: &Records, seq: u64) -> Result<(), String>;
}

/// The two files of the journal beside `db`.
pub(super) fn files(db: &Path) -> [PathBuf; 2] {
    ["0", "1"].map(|n| {
        let mut p = db.as_os_str().to_owned();
        p.push(format!(".journal-{n}"));
        PathBuf::from(p)
    })
}

/// Frames of a journal file, as far as they are whole: a torn or damaged tail ends the list.
/// `Err` names a frame whose checksum holds but whose payload does not parse.
pub(super) fn read_frames(bytes: &[u8]) -> Result<Vec<(u64, Records)>, String> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while rest.len() >= HEADER {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_FRAME || rest.len() - HEADER < len {
            break;
        }
        let body = &rest[8..HEADER + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        let mut seq = [0; 8];
        seq.copy_from_slice(&body[..8]);
        let seq = u64::from_le_bytes(seq);
        let records =
            parse_payload(&body[8..]).ok_or_else(|| format!("frame {seq} is malformed"))?;
        frames.push((seq, records));
        rest = &rest[HEADER + len..];
    }
    Ok(frames)
}

fn parse_payload(mut p: &[u8]) -> Option<Records> {
    let mut records = Records::new();
    while !p.is_empty() {
        let klen = usize::from(u16::from_le_bytes(p.get(..2)?.try_into().ok()?));
        let key = std::str::from_utf8(p.get(2..2 + klen)?).ok()?.to_owned();
        p = &p[2 + klen..];
        let vlen = u32::from_le_bytes(p.get(..4)?.try_into().ok()?) as usize;
        let value = p.get(4..4 + vlen)?.to_vec();
        p = &p[4 + vlen..];
        records.insert(key, value);
    }
    Some(records)
}

fn frame(seq: u64, records: &[(&str, &[u8])]) -> Result<Vec<u8>, String> {
    // Built in place: length and checksum are filled in once the body is there.
    let mut out = vec![0u8; 8];
    out.extend_from_slice(&seq.to_le_bytes());
    for (key, value) in records {
        let klen = u16::try_from(key.len()).map_err(|_| format!("key {key:.32}… is too long"))?;
        let vlen = u32::try_from(value.len()).map_err(|_| format!("value of {key} is too long"))?;
        out.extend_from_slice(&klen.to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&vlen.to_le_bytes());
        out.extend_from_slice(value);
    }
    let payload = out.len() - HEADER;
    if payload > MAX_FRAME {
        return Err(format!("{payload} bytes of records in one write"));
    }
    let len = u32::try_from(payload).map_err(|e| e.to_string())?;
    let crc = crc32fast::hash(&out[8..]);
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Opens (creating) a journal file for appending and truncating; never through a symlink.
/// Appending (`O_APPEND`), so that writes after the file is emptied start at its beginning
/// again, not at the offset the descriptor had reached.
pub(super) fn open_file(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o600)
        .open(path)
}

/// The journal, with its checkpointing thread.
pub(super) struct Journal {
    shared: Arc<Shared>,
    worker: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    sink: Box<dyn Sink>,
    /// How long after the first record a checkpoint follows.
    after: Duration,
}

struct State {
    files: [File; 2],
    /// The file appends go to.
    active: usize,
    /// The last sequence number given to a frame.
    seq: u64,
    /// Records appended since the last switch, and when the first of them was.
    latest: Records,
    since: Option<Instant>,
    bytes: u64,
    /// Records being checkpointed, until redb has them.
    inflight: Option<Arc<Records>>,
    closing: bool,
    /// A write to the journal failed: later writes fail too, until a restart replays it.
    broken: Option<String>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

impl Journal {
    /// Starts the journal on two emptied files (replay is the caller's, before this), numbering
    /// frames after `seq`, checkpointing `after` the first record of each round.
    pub(super) fn start(
        files: [File; 2],
        seq: u64,
        sink: Box<dyn Sink>,
        after: Duration,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                files,
                active: 0,
                seq,
                latest: Records::new(),
                since: None,
                bytes: 0,
                inflight: None,
                closing: false,
                broken: None,
            }),
            changed: Condvar::new(),
            sink,
            after,
        });
        let worker = shared.clone();
        let worker = std::thread::Builder::new()
            .name("weft-db-checkpoint".into())
            .spawn(move || worker.run())?;
        Ok(Self {
            shared,
            worker: Some(worker),
        })
    }

    /// Appends `records` as one frame: in the kernel when this returns.
    pub(super) fn append(&self, records: &[(&str, &[u8])]) -> Result<(), String> {
        let mut st = self.shared.lock();
        if let Some(why) = &st.broken {
            return Err(why.clone());
        }
        let frame = frame(st.seq + 1, records)?;
        let active = st.active;
        if let Err(e) = st.files[active].write_all(&frame) {
            // A partial frame fails its checksum at replay; nothing after it may be appended.
            let why = format!("journal write failed: {e}");
            st.broken = Some(why.clone());
            return Err(why);
        }
        st.seq += 1;
        st.bytes += frame.len() as u64;
        for (key, value) in records {
            st.latest.insert((*key).to_owned(), value.to_vec());
        }
        st.since.get_or_insert_with(Instant::now);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// The latest value of `key` not yet in redb, if any.
    pub(super) fn pending(&self, key: &str) -> Option<Vec<u8>> {
        let st = self.shared.lock();
        st.latest
            .get(key)
            .or_else(|| st.inflight.as_ref().and_then(|r| r.get(key)))
            .cloned()
    }
}

impl Drop for Journal {
    /// Checkpoints what is left and stops the thread.
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.changed.notify_all();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked holding it; the state is whole
        // between statements.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        loop {
            let mut st = self.lock();
            // Wait for records, then until they are due (or the journal is large, or closing).
            loop {
                let due = match st.since {
                    Some(t) if st.closing || st.bytes >= CHECKPOINT_BYTES => Some(t),
                    Some(t) if t.elapsed() >= self.after => Some(t),
                    _ => None,
                };
                if due.is_some() {
                    break;
                }
                if st.closing {
                    return;
                }
                st = match st.since {
                    Some(t) => {
                        let left = self.after.saturating_sub(t.elapsed());
                        self.changed
                            .wait_timeout(st, left)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                    None => self
                        .changed
                        .wait(st)
                        .unwrap_or_else(PoisonError::into_inner),
                };
            }
            let records = Arc::new(std::mem::take(&mut st.latest));
            st.inflight = Some(records.clone());
            st.since = None;
            st.bytes = 0;
            let seq = st.seq;
            let done = st.active;
            st.active = 1 - done;
            drop(st);
            let result = self.sink.commit(&records, seq);
            let mut st = self.lock();
            st.inflight = None;
            match result {
                Ok(()) => {
                    // redb holds every frame of the switched-out file now.
                    if let Err(e) = st.files[done].set_len(0) {
                        tracing::warn!("[store]: cannot empty the journal: {e}");
                    }
                }
                Err(e) => {
                    tracing::error!("[store]: checkpoint failed, retrying: {e}");
                    // Keep what was newer; the frames stay in both files for replay.
                    for (k, v) in Arc::unwrap_or_clone(records) {
                        st.latest.entry(k).or_insert(v);
                    }
                    st.since.get_or_insert_with(Instant::now);
                    if st.closing {
                        return;
                    }
                }
            }
        }
    }
}

/// Reads both journal files and returns the records of frames after `seq`, latest value per
/// key, with the last sequence number seen (at least `seq`).
pub(super) fn replay(files: &[PathBuf; 2], seq: u64) -> Result<(Records, u64), (PathBuf, String)> {
    let mut frames = Vec::new();
    for path in files {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err((path.clone(), e.to_string())),
        };
        frames.extend(read_frames(&bytes).map_err(|e| (path.clone(), e))?);
    }
    frames.sort_by_key(|(s, _)| *s);
    let mut records = Records::new();
    let mut last = seq;
    for (s, r) in frames {
        if s > seq {
            records.extend(r);
            last = last.max(s);
        }
    }
    Ok((records, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_torn_tail_ends_them() {
        let mut bytes = frame(1, &[("ring", b"r1"), ("owned", b"o1")]).unwrap();
        bytes.extend(frame(2, &[("owned", b"o2")]).unwrap());
        let whole = bytes.len();
        bytes.extend(frame(3, &[("owned", b"o3")]).unwrap());
        let frames = read_frames(&bytes).unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[1].0, 2);
        assert_eq!(
            frames[1].1.get("owned").map(Vec::as_slice),
            Some(&b"o2"[..])
        );
        // Torn anywhere in the third frame: the first two stand.
        for cut in whole..bytes.len() {
            let got = read_frames(&bytes[..cut]).unwrap();
            assert_eq!(got.len(), 2, "cut at {cut}");
        }
        // A flipped bit in the second frame's value ends the list there.
        let mut bad = bytes.clone();
        let at = bad.windows(2).position(|w| w == b"o2").unwrap();
        bad[at] ^= 1;
        assert_eq!(read_frames(&bad).unwrap().len(), 1);
        // A length past the end, or absurd, is a tail too.
        assert!(read_frames(&[0xff; 40]).unwrap().is_empty());
    }

    /// Keeps what it is given, and the sequence number it reached.
    #[derive(Default)]
    struct MemSink(Mutex<(Records, u64)>);

    impl Sink for Arc<MemSink> {
        fn commit(&self, records: &Records, seq: u64) -> Result<(), String> {
            let mut m = self.0.lock().unwrap();
            m.0.extend(records.iter().map(|(k, v)| (k.clone(), v.clone())));
            m.1 = seq;
            Ok(())
        }
    }

    #[test]
    fn rounds_of_checkpoints_leave_files_that_replay_whole() {
        let dir = std::env::temp_dir().join(format!("weft-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths = files(&dir.join("db"));
        let opened = paths.clone().map(|p| {
            let f = open_file(&p).unwrap();
            f.set_len(0).unwrap();
            f
        });
        let sink = Arc::new(MemSink::default());
        let j =
            Journal::start(opened, 0, Box::new(sink.clone()), Duration::from_millis(20)).unwrap();
        // Several rounds: each file is emptied and written again.
        for round in 1..=5u64 {
            j.append(&[("owned", format!("v{round}").as_bytes())])
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while sink.0.lock().unwrap().1 < round {
                assert!(Instant::now() < deadline, "round {round}: no checkpoint");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        j.append(&[("owned", b"last")]).unwrap();
        // Every file holds whole frames from its first byte: no hole where an emptied file
        // was written at its old offset.
        for p in &paths {
            let bytes = std::fs::read(p).unwrap();
            let frames = read_frames(&bytes).unwrap();
            let len: usize = frames
                .iter()
                .map(|(seq, r)| {
                    let pairs: Vec<(&str, &[u8])> =
                        r.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
                    frame(*seq, &pairs).unwrap().len()
                })
                .sum();
            assert_eq!(len, bytes.len(), "{}", p.display());
        }
        let (records, last) = replay(&paths, 5).unwrap();
        assert_eq!(last, 6);
        assert_eq!(records.get("owned").map(Vec::as_slice), Some(&b"last"[..]));
        drop(j);
        assert_eq!(
            sink.0.lock().unwrap().0.get("owned").map(Vec::as_slice),
            Some(&b"last"[..])
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_checksummed_frame_that_does_not_parse_is_an_error() {
        let body: Vec<u8> = 7u64.to_le_bytes().into_iter().chain([9, 0, b'k']).collect();
        let mut bytes = u32::try_from(body.len() - 8)
            .unwrap()
            .to_le_bytes()
            .to_vec();
        bytes.extend(crc32fast::hash(&body).to_le_bytes());
        bytes.extend(&body);
        assert_eq!(read_frames(&bytes).unwrap_err(), "frame 7 is malformed");
    }
}
