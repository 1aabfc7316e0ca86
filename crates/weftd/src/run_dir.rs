//! The run dir (`WEFT_RUN_DIR`, default `/run/weft`): the router's pid file and its log, and
//! the answer to "is the process that pid file names this router?".
//!
//! Files here are written as root, so none is opened through a symlink someone planted: the
//! log with `O_NOFOLLOW` and only if it is a regular file; the pid file is written under a
//! fresh name with `O_EXCL` and renamed over `weft.pid` (a rename replaces a symlink, never
//! its target). The run dir itself must be a directory owned by root or by us, and no
//! component of its path may be a symlink owned by anyone else. Plain paths, not `openat` on
//! a directory handle: with those checks the only one who could swap a component between the
//! check and the open is its owner, root or us, and std has no `openat`.
//!
//! A router keeps its pid file open for its whole life (close-on-exec, so nothing it starts
//! inherits it). That open file is the router's token: `weft stop` signals the pid in the
//! file only if `/proc/<pid>/fd` shows that process holding this very file (same device and
//! inode), so a stale pid file whose number now belongs to another process, or a file
//! someone wrote, never gets that process signalled.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// The pid file's name inside the run dir.
pub const PID_FILE: &str = "weft.pid";
/// The log's name inside the run dir.
pub const LOG_FILE: &str = "weft.log";
/// The control token's name inside the run dir: the calls that start or stop the proxy or
/// the plugin must show it, so that only the router's own user (root) can make the router
/// listen somewhere new or talk to another daemon.
pub const TOKEN_FILE: &str = "control.token";

/// A run-dir file or the dir itself is unsafe or unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunDirError {
    /// Creating, reading or writing failed.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// A path component is a symlink that someone other than root or us owns.
    #[error("{0} is a symlink owned by uid {1}; refusing to use it")]
    ForeignSymlink(PathBuf, u32),
    /// The run dir belongs to someone other than root or us.
    #[error("run dir {0} is owned by uid {1}; refusing to use it")]
    ForeignDir(PathBuf, u32),
    /// The run dir is not a directory.
    #[error("run dir {0} is not a directory")]
    NotDir(PathBuf),
    /// The file is a symlink.
    #[error("{0} is a symlink; refusing to open it")]
    Symlink(PathBuf),
    /// The file is a FIFO, a device or a directory.
    #[error("{0} is not a regular file; refusing to open it")]
    NotFile(PathBuf),
}

/// What the pid file says about the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterProcess {
    /// No pid file, or its process is gone.
    Absent,
    /// The router of this run dir, with this pid.
    Running(i32),
    /// The pid file names a live process that is not this run dir's router.
    Unrelated(i32),
}

/// The run dir of one router.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

/// The router's pid file, held open while the router runs; removed on drop if `weft.pid`
/// is still this file.
#[derive(Debug)]
pub struct PidFile {
    file: File,
    path: PathBuf,
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let (Ok(ours), Ok(now)) = (self.file.metadata(), std::fs::symlink_metadata(&self.path)) {
            if same_file(&ours, &now) {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl RunDir {
    /// The run dir at `path` (nothing is touched yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The pid file's path.
    pub fn pid_path(&self) -> PathBuf {
        self.path.join(PID_FILE)
    }

    /// The log's path.
    pub fn log_path(&self) -> PathBuf {
        self.path.join(LOG_FILE)
    }

    /// Creates the run dir if needed and checks that it is safe to write in: a directory
    /// owned by root or us, reached through no symlink that someone else owns.
    pub fn prepare(&self) -> Result<(), RunDirError> {
        let io = |p: &Path, e| RunDirError::Io(p.to_path_buf(), e);
        std::fs::create_dir_all(&self.path).map_err(|e| io(&self.path, e))?;
        let euid = nix::unistd::geteuid().as_raw();
        let trusted = |uid: u32| uid == 0 || uid == euid;
        let abs = std::path::absolute(&self.path).map_err(|e| io(&self.path, e))?;
        for p in abs.ancestors() {
            let m = std::fs::symlink_metadata(p).map_err(|e| io(p, e))?;
            if m.file_type().is_symlink() && !trusted(m.uid()) {
                return Err(RunDirError::ForeignSymlink(p.to_path_buf(), m.uid()));
            }
        }
        let m = std::fs::metadata(&self.path).map_err(|e| io(&self.path, e))?;
        if !m.is_dir() {
            return Err(RunDirError::NotDir(self.path.clone()));
        }
        if !trusted(m.uid()) {
            return Err(RunDirError::ForeignDir(self.path.clone(), m.uid()));
        }
        Ok(())
    }

    /// Opens the log for appending, creating it if needed; never through a symlink, and only
    /// a regular file (`O_NONBLOCK` so that a FIFO there cannot block the open).
    pub fn open_log(&self) -> Result<File, RunDirError> {
        let path = self.log_path();
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| open_error(&path, e))?;
        regular(&path, &f)?;
        Ok(f)
    }

    /// What the log holds from byte `offset` on (lossily decoded); `None` if it cannot be
    /// read, or only through a symlink.
    pub fn log_since(&self, offset: u64) -> Option<String> {
        use std::io::Seek as _;
        let path = self.log_path();
        let mut f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .ok()?;
        regular(&path, &f).ok()?;
        f.seek(std::io::SeekFrom::Start(offset)).ok()?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Writes this process's pid to the pid file and keeps the file open as the router's
    /// token (see the module doc).
    pub fn write_pid(&self) -> Result<PidFile, RunDirError> {
        let path = self.pid_path();
        let tmp = self.path.join(format!("{PID_FILE}.{}", std::process::id()));
        let io = |e| RunDirError::Io(tmp.clone(), e);
        let _ = std::fs::remove_file(&tmp);
        // create_new is O_EXCL, which also refuses to follow a symlink at `tmp`.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io)?;
        let written =
            writeln!(file, "{}", std::process::id()).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(RunDirError::Io(path, e));
        }
        Ok(PidFile { file, path })
    }

    /// Writes a fresh control token (see [`TOKEN_FILE`]), readable by this user only; under
    /// a fresh name with `O_EXCL`, renamed into place, as the pid file.
    pub fn write_token(&self, token: &str) -> Result<(), RunDirError> {
        let path = self.path.join(TOKEN_FILE);
        let tmp = self
            .path
            .join(format!("{TOKEN_FILE}.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(token.as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(RunDirError::Io(path, e));
        }
        Ok(())
    }

    /// The control token, if this user may read it; never through a symlink.
    pub fn read_token(&self) -> Result<String, RunDirError> {
        let path = self.path.join(TOKEN_FILE);
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| open_error(&path, e))?;
        regular(&path, &f)?;
        let mut token = String::new();
        f.take(256)
            .read_to_string(&mut token)
            .map_err(|e| RunDirError::Io(path, e))?;
        Ok(token.trim().to_string())
    }

    /// Whether the pid file names this run dir's router: only if that process holds the
    /// pid file open. `/proc` entries that cannot be read are skipped.
    pub fn router(&self) -> Result<RouterProcess, RunDirError> {
        let path = self.pid_path();
        let mut f = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RouterProcess::Absent),
            Err(e) => return Err(open_error(&path, e)),
        };
        let ours = regular(&path, &f)?;
        let mut text = String::new();
        std::io::Read::by_ref(&mut f)
            .take(64)
            .read_to_string(&mut text)
            .map_err(|e| RunDirError::Io(path.clone(), e))?;
        // Closed before the scan, so that only a holder other than this reader counts.
        drop(f);
        let pid = match text.trim().parse::<i32>() {
            Ok(pid) if pid > 0 => pid,
            _ => return Ok(RouterProcess::Absent),
        };
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        if !proc_dir.exists() {
            return Ok(RouterProcess::Absent);
        }
        let Ok(fds) = std::fs::read_dir(proc_dir.join("fd")) else {
            return Ok(RouterProcess::Unrelated(pid));
        };
        let holds = fds
            .flatten()
            .filter_map(|fd| std::fs::metadata(fd.path()).ok())
            .any(|m| same_file(&m, &ours));
        Ok(if holds {
            RouterProcess::Running(pid)
        } else {
            RouterProcess::Unrelated(pid)
        })
    }
}

fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

fn open_error(path: &Path, e: std::io::Error) -> RunDirError {
    if e.raw_os_error() == Some(libc::ELOOP) {
        RunDirError::Symlink(path.to_path_buf())
    } else {
        RunDirError::Io(path.to_path_buf(), e)
    }
}

/// `f`'s metadata if it is a regular file.
fn regular(path: &Path, f: &File) -> Result<std::fs::Metadata, RunDirError> {
    let m = f
        .metadata()
        .map_err(|e| RunDirError::Io(path.to_path_buf(), e))?;
    if m.is_file() {
        Ok(m)
    } else {
        Err(RunDirError::NotFile(path.to_path_buf()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("weft-rundir-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn control_token_is_the_users_alone() {
        let t = TempDir::new("token");
        let run = RunDir::new(t.0.join("run"));
        run.prepare().unwrap();
        assert!(run.read_token().is_err());
        run.write_token("abc123").unwrap();
        assert_eq!(run.read_token().unwrap(), "abc123");
        let path = t.0.join("run").join(TOKEN_FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        // A new router's token replaces the last one, even through a planted symlink.
        std::fs::remove_file(&path).unwrap();
        let victim = t.0.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert!(run.read_token().is_err());
        run.write_token("def456").unwrap();
        assert_eq!(run.read_token().unwrap(), "def456");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }

    #[test]
    fn symlinked_log_is_refused() {
        let t = TempDir::new("log");
        let run = RunDir::new(t.0.join("run"));
        run.prepare().unwrap();
        let victim = t.0.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, run.log_path()).unwrap();
        let err = run.open_log().unwrap_err();
        assert!(matches!(err, RunDirError::Symlink(_)), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        // A regular log opens, and appends.
        std::fs::remove_file(run.log_path()).unwrap();
        std::fs::write(run.log_path(), "a\n").unwrap();
        writeln!(run.open_log().unwrap(), "b").unwrap();
        assert_eq!(std::fs::read_to_string(run.log_path()).unwrap(), "a\nb\n");
    }

    #[test]
    fn fifo_log_is_refused() {
        let t = TempDir::new("fifo");
        let run = RunDir::new(&t.0);
        let made = std::process::Command::new("mkfifo")
            .arg(run.log_path())
            .status();
        if !made.is_ok_and(|s| s.success()) {
            return;
        }
        // No reader: a blocking open would hang here; O_NONBLOCK makes it fail at once.
        assert!(run.open_log().is_err());
    }

    #[test]
    fn symlinked_pid_file_is_replaced_not_followed() {
        let t = TempDir::new("pid");
        let run = RunDir::new(&t.0);
        let victim = t.0.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, run.pid_path()).unwrap();
        // Nothing follows the link: reading refuses it, and writing replaces the link itself.
        assert!(matches!(run.router(), Err(RunDirError::Symlink(_))));
        let pid = run.write_pid().unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let m = std::fs::symlink_metadata(run.pid_path()).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!(
            std::fs::read_to_string(run.pid_path()).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(pid);
        assert!(!run.pid_path().exists(), "pid file removed on drop");
        assert!(victim.exists());
    }

    #[test]
    fn foreign_symlinked_run_dir_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let t = TempDir::new("foreign");
        let real = t.0.join("real");
        std::fs::create_dir(&real).unwrap();
        let link = t.0.join("run");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        // Ours: fine. Someone else's: refused.
        RunDir::new(&link).prepare().unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
        let err = RunDir::new(link.join("sub")).prepare().unwrap_err();
        assert!(
            matches!(err, RunDirError::ForeignSymlink(ref p, 65534) if *p == link),
            "{err}"
        );
        std::os::unix::fs::chown(&real, Some(65534), None).unwrap();
        let err = RunDir::new(&real).prepare().unwrap_err();
        assert!(matches!(err, RunDirError::ForeignDir(_, 65534)), "{err}");
    }

    #[test]
    fn router_is_only_the_process_holding_the_pid_file() {
        let t = TempDir::new("who");
        let run = RunDir::new(&t.0);
        assert_eq!(run.router().unwrap(), RouterProcess::Absent);
        let held = run.write_pid().unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        assert_eq!(run.router().unwrap(), RouterProcess::Running(me));
        drop(held);
        // A pid file that names a live process which does not hold it.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let other_pid = i32::try_from(other.id()).unwrap();
        std::fs::write(run.pid_path(), format!("{other_pid}\n")).unwrap();
        let seen = run.router();
        let _ = other.kill();
        let _ = other.wait();
        assert_eq!(seen.unwrap(), RouterProcess::Unrelated(other_pid));
        // Our own pid, written by someone else: not the holder of this file either.
        std::fs::write(run.pid_path(), format!("{me}\n")).unwrap();
        assert_eq!(run.router().unwrap(), RouterProcess::Unrelated(me));
        // init: its /proc entry may be unreadable (it is here), which is not a match either.
        std::fs::write(run.pid_path(), "1\n").unwrap();
        assert_eq!(run.router().unwrap(), RouterProcess::Unrelated(1));
        // A pid that is gone, and junk.
        std::fs::write(run.pid_path(), format!("{other_pid}\n")).unwrap();
        assert_eq!(run.router().unwrap(), RouterProcess::Absent);
        std::fs::write(run.pid_path(), "junk").unwrap();
        assert_eq!(run.router().unwrap(), RouterProcess::Absent);
    }
}
