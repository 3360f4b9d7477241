//! `--output-dir`: each session's lines (and its event markers) appended to its own
//! file, `DIR/<sender>/<start>-<session>.log` (one machine's history is one folder),
//! with a bounded number of open files. Files are flushed to disk (`fdatasync`) when
//! their session goes silent or ends and at least every `--sync-every`, so that a
//! receiver that loses power right after a crash keeps what it printed. SIGHUP
//! closes every file; the next line opens it again by name (log rotation). A failing disk is reported once and
//! counted; standard output is served regardless. When a file takes writes again, a
//! line an earlier failure tore is ended first (it never runs into the next line),
//! and a marker says lines may be missing there.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::DateTime;
use ncu_proto::event::{SessionInfo, SourceKind};
use ncu_proto::wire;

/// Most files open at once (least recently used closed first).
const MAX_OPEN: usize = 64;
/// Most sessions remembered as having lost bytes to a failed write (for the marker);
/// past this, a torn line is still ended but not marked.
const MAX_BROKEN: usize = 4096;
/// Start times remembered for netconsole and text sessions (whose ids carry none),
/// so that their file keeps its name when it is closed and opened again.
const MAX_STARTS: usize = 65_536;

struct OpenFile {
    w: BufWriter<File>,
    path: PathBuf,
    used: u64,
    /// Bytes were written since the last `fdatasync`; since when.
    dirty_since: Option<Instant>,
    /// This run created the file (it was empty when opened).
    created: bool,
}

/// The files of `--output-dir`.
pub(crate) struct OutputDir {
    dir: PathBuf,
    open: HashMap<u64, OpenFile>,
    tick: u64,
    /// Writes that failed.
    pub(crate) errors: u64,
    warned: bool,
    /// Sessions whose file lost buffered bytes to a failed write, and the error: the
    /// next write to it is preceded by a marker.
    broken: HashMap<u64, String>,
    /// `--sync-every`: written bytes reach the disk at most this long after.
    sync_every: Duration,
    /// Start times (µs since the epoch) of sessions without one in their id, oldest
    /// first.
    starts: HashMap<u64, u64>,
    start_order: VecDeque<u64>,
    /// Files closed to make room (past [`MAX_OPEN`]) whose bytes are not on disk yet:
    /// session -> (path, unsynced since). Synced when due like open ones, without
    /// making an eviction cost an `fdatasync`.
    unsynced: HashMap<u64, (PathBuf, Instant)>,
    /// `fdatasync` calls made, and failed.
    pub(crate) syncs: u64,
    pub(crate) sync_errors: u64,
}

/// A file-name-safe form of a sender name.
pub(crate) fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, '_');
    }
    s
}

impl OutputDir {
    /// Files under `dir` (created if missing; a failure is reported, not fatal),
    /// flushed to disk at least every `sync_every` (zero: after every write).
    pub(crate) fn new(dir: &Path, sync_every: Duration) -> OutputDir {
        let mut out = OutputDir {
            dir: dir.to_owned(),
            open: HashMap::new(),
            tick: 0,
            errors: 0,
            warned: false,
            broken: HashMap::new(),
            sync_every,
            starts: HashMap::new(),
            start_order: VecDeque::new(),
            unsynced: HashMap::new(),
            syncs: 0,
            sync_errors: 0,
        };
        if let Err(e) = std::fs::create_dir_all(dir) {
            out.warn(dir, &e);
        }
        out
    }

    fn warn(&mut self, path: &Path, e: &io::Error) {
        if !self.warned {
            self.warned = true;
            eprintln!(
                "ncu-recv: --output-dir: cannot write {}: {e}; lines still go to standard \
                 output (further failures are only counted, see the summary)",
                path.display()
            );
        }
    }

    /// When the session started: from its id for ncu sessions (the same file after a
    /// receiver restart), else when this receiver first wrote for it.
    fn start_of(&mut self, session: &SessionInfo, now_us: u64) -> u64 {
        if session.kind == SourceKind::Ncu {
            return u64::from(wire::session_started_secs(session.id)) * 1_000_000;
        }
        if let Some(&t) = self.starts.get(&session.id) {
            return t;
        }
        if self.start_order.len() >= MAX_STARTS {
            if let Some(old) = self.start_order.pop_front() {
                self.starts.remove(&old);
            }
        }
        self.starts.insert(session.id, now_us);
        self.start_order.push_back(session.id);
        now_us
    }

    /// The session's file, `DIR/<sender>/<start>-<session>.log`: under its sender's
    /// name as known now (a session's name is its source IP until its HELLO or
    /// heartbeat arrives).
    fn path_of(&mut self, session: &SessionInfo, now_us: u64) -> PathBuf {
        let start = self.start_of(session, now_us);
        let start = DateTime::from_timestamp_micros(i64::try_from(start).unwrap_or(0)).map_or_else(
            || "19700101T000000Z".to_owned(),
            |t| t.format("%Y%m%dT%H%M%SZ").to_string(),
        );
        self.dir
            .join(sanitize(&session.name()))
            .join(format!("{start}-{}.log", session.id_hex()))
    }

    /// Appends `bytes` to the session's file (`now_us`: the wall clock, for the name
    /// of a new netconsole or text session's file).
    pub(crate) fn write(&mut self, session: &SessionInfo, bytes: &[u8], now: Instant, now_us: u64) {
        self.tick += 1;
        let path = self.path_of(session, now_us);
        if self.open.get(&session.id).is_some_and(|f| f.path != path) {
            self.move_to(session.id, &path);
        }
        if !self.open.contains_key(&session.id) {
            if self.open.len() >= MAX_OPEN {
                let lru = self
                    .open
                    .iter()
                    .min_by_key(|(_, f)| f.used)
                    .map(|(k, _)| *k);
                if let Some(k) = lru {
                    self.evict(k);
                }
            }
            if let Some(folder) = path.parent() {
                // A failure shows in the open below.
                let _ = std::fs::create_dir_all(folder);
            }
            match OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&path)
            {
                Ok(f) => {
                    let created = f.metadata().is_ok_and(|m| m.len() == 0);
                    let mut w = BufWriter::with_capacity(16 * 1024, f);
                    // A line torn by an earlier failed write (here or in an earlier
                    // run) must not run into the next one.
                    if ends_mid_line(w.get_ref()) {
                        let _ = w.write_all(b"\n");
                    }
                    if let Some(e) = self.broken.remove(&session.id) {
                        let _ = writeln!(
                            w,
                            "### ncu: output lines may be missing here: writing this file \
                             failed ({e})"
                        );
                    }
                    let path = path.clone();
                    let file = OpenFile {
                        w,
                        path,
                        used: 0,
                        // Bytes written before it was evicted are still to be synced.
                        dirty_since: self.unsynced.remove(&session.id).map(|(_, t)| t),
                        created,
                    };
                    self.open.insert(session.id, file);
                }
                Err(e) => {
                    self.errors += 1;
                    self.warn(&path, &e);
                    return;
                }
            }
        }
        let tick = self.tick;
        let Some(f) = self.open.get_mut(&session.id) else {
            return;
        };
        f.used = tick;
        f.dirty_since.get_or_insert(now);
        if let Err(e) = f.w.write_all(bytes) {
            self.write_failed(session.id, &path, &e);
            return;
        }
        if self.sync_every.is_zero() {
            self.sync(session.id);
        }
    }

    /// Flushes session `id`'s file and `fdatasync`s it, if it has unsynced bytes.
    fn sync(&mut self, id: u64) {
        let Some(f) = self.open.get_mut(&id) else {
            return;
        };
        if f.dirty_since.is_none() {
            return;
        }
        let result = f.w.flush().and_then(|()| f.w.get_ref().sync_data());
        f.dirty_since = None;
        self.syncs += 1;
        if let Err(e) = result {
            self.sync_errors += 1;
            let path = f.path.clone();
            self.write_failed(id, &path, &e);
        }
    }

    /// Syncs every file whose oldest unsynced bytes are `--sync-every` old, open or
    /// evicted.
    pub(crate) fn sync_due(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, f)| f.dirty_since.is_some_and(|t| t + self.sync_every <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.sync(id);
        }
        let due: Vec<u64> = self
            .unsynced
            .iter()
            .filter(|(_, (_, t))| *t + self.sync_every <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            if let Some((path, _)) = self.unsynced.remove(&id) {
                // Any descriptor of the file syncs the bytes written through another.
                let result = File::open(&path).and_then(|f| f.sync_data());
                self.syncs += 1;
                if let Err(e) = result {
                    self.sync_errors += 1;
                    self.errors += 1;
                    self.warn(&path, &e);
                }
            }
        }
    }

    /// When [`OutputDir::sync_due`] next has work.
    pub(crate) fn next_sync(&self) -> Option<Instant> {
        self.open
            .values()
            .filter_map(|f| f.dirty_since)
            .chain(self.unsynced.values().map(|(_, t)| *t))
            .min()
            .map(|t| t + self.sync_every)
    }

    /// Closes a file to make room: its bytes are written out, and synced later when
    /// due ([`OutputDir::sync_due`]) or when its session ends.
    fn evict(&mut self, id: u64) {
        let Some(f) = self.open.get_mut(&id) else {
            return;
        };
        match f.w.flush() {
            Ok(()) => {
                if let Some(f) = self.open.remove(&id) {
                    if let Some(since) = f.dirty_since {
                        self.unsynced.insert(id, (f.path, since));
                    }
                }
            }
            Err(e) => {
                let path = f.path.clone();
                self.write_failed(id, &path, &e);
            }
        }
    }

    /// The session's name became known (a session joined mid-way is named after its
    /// address until a heartbeat or END names it): its file moves under the name, so
    /// that one machine's history stays one folder. A file this run created is
    /// renamed, or appended to the file already there (an earlier run's) and removed.
    fn move_to(&mut self, id: u64, path: &Path) {
        let Some(old) = self.open.get(&id).map(|f| (f.path.clone(), f.created)) else {
            return;
        };
        self.close(id);
        let (old, created) = old;
        if !created || self.open.contains_key(&id) {
            return;
        }
        if let Some(folder) = path.parent() {
            let _ = std::fs::create_dir_all(folder);
        }
        let result = if path.exists() {
            std::fs::read(&old).and_then(|bytes| {
                let mut f = OpenOptions::new().append(true).open(path)?;
                f.write_all(&bytes)?;
                f.sync_data()?;
                std::fs::remove_file(&old)
            })
        } else {
            std::fs::rename(&old, path)
        };
        if let Err(e) = result {
            self.errors += 1;
            self.warn(path, &e);
        }
        if let Some(folder) = old.parent() {
            // Only when empty: the address's folder may hold other sessions.
            let _ = std::fs::remove_dir(folder);
        }
    }

    /// SIGHUP: syncs and closes every file; each opens again, by name, with its
    /// session's next line (a rotated file is then created anew).
    pub(crate) fn reopen(&mut self) {
        let ids: Vec<u64> = self.open.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
    }

    /// Syncs and closes a session's file (it ended, went silent, or room is needed);
    /// a later line reopens it for appending.
    pub(crate) fn close(&mut self, id: u64) {
        self.sync(id);
        let Some(f) = self.open.get_mut(&id) else {
            return;
        };
        match f.w.flush() {
            Ok(()) => {
                self.open.remove(&id);
            }
            Err(e) => {
                let path = f.path.clone();
                self.write_failed(id, &path, &e);
            }
        }
    }

    /// A write or flush of session `id`'s file at `path` failed: counted, reported
    /// once, the file dropped with what it buffered, and the session marked for the
    /// marker before its next line.
    fn write_failed(&mut self, id: u64, path: &Path, e: &io::Error) {
        self.errors += 1;
        self.warn(path, e);
        if let Some(f) = self.open.remove(&id) {
            // The buffered bytes failed already; do not try them again.
            let (_file, _lost) = f.w.into_parts();
        }
        if self.broken.len() < MAX_BROKEN || self.broken.contains_key(&id) {
            self.broken.insert(id, e.to_string());
        }
    }

    /// Writes out what is buffered (when idle, and at exit).
    pub(crate) fn flush(&mut self) {
        let mut failed = Vec::new();
        for (id, f) in &mut self.open {
            if let Err(e) = f.w.flush() {
                failed.push((*id, f.path.clone(), e));
            }
        }
        for (id, path, e) in failed {
            self.write_failed(id, &path, &e);
        }
    }
}

/// The file is not empty and its last byte is not a newline.
fn ends_mid_line(file: &File) -> bool {
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    let mut last = [0u8; 1];
    len > 0 && matches!(file.read_at(&mut last, len - 1), Ok(1)) && last[0] != b'\n'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicted_files_are_synced_when_due_without_an_fdatasync_each() {
        let dir = std::env::temp_dir().join(format!("ncu-outdir-evict-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let every = Duration::from_secs(1);
        let mut out = OutputDir::new(&dir, every);
        let t0 = Instant::now();
        let sessions: Vec<SessionInfo> = (0..(MAX_OPEN as u64 + 10))
            .map(|i| SessionInfo {
                id: 1000 + i,
                given_name: Some(format!("host-{i}").into()),
                addr: "127.0.0.1:9".parse().expect("an address"),
                kind: SourceKind::Text,
            })
            .collect();
        for s in &sessions {
            out.write(s, b"a line\n", t0, 1_700_000_000_000_000);
        }
        // Ten files were closed to make room, none synced yet.
        assert_eq!(
            (out.open.len(), out.unsynced.len(), out.syncs),
            (MAX_OPEN, 10, 0)
        );
        assert_eq!(out.next_sync(), Some(t0 + every));
        // A line of an evicted session reopens its file, still owed a sync.
        out.write(&sessions[0], b"again\n", t0, 1_700_000_000_000_000);
        assert_eq!(out.open[&sessions[0].id].dirty_since, Some(t0));
        out.sync_due(t0 + every);
        assert_eq!(out.syncs as usize, MAX_OPEN + 10);
        assert!(out.unsynced.is_empty() && out.next_sync().is_none());
        let text = std::fs::read_to_string(
            dir.join("host-0")
                .join("20231114T221320Z-00000000000003e8.log"),
        )
        .expect("the file");
        assert_eq!(text, "a line\nagain\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_are_safe() {
        assert_eq!(sanitize("web-1.prod"), "web-1.prod");
        assert_eq!(sanitize("../etc/passwd"), "_.._etc_passwd");
        assert_eq!(sanitize(""), "_");
        assert_eq!(sanitize("a b/c"), "a_b_c");
        assert_eq!(sanitize(&"x".repeat(300)).len(), 64);
    }
}
