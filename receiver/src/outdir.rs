//! `--output-dir`: each session's lines (and its event markers) appended to its own
//! file, with a bounded number of open files. A failing disk is reported once and
//! counted; standard output is served regardless. When a file takes writes again, a
//! line an earlier failure tore is ended first (it never runs into the next line),
//! and a marker says lines may be missing there.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ncu_proto::event::SessionInfo;

/// Most files open at once (least recently used closed first).
const MAX_OPEN: usize = 64;
/// Most sessions remembered as having lost bytes to a failed write (for the marker);
/// past this, a torn line is still ended but not marked.
const MAX_BROKEN: usize = 4096;
struct OpenFile {
    w: BufWriter<File>,
    path: PathBuf,
    used: u64,
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
    /// Files under `dir` (created if missing; a failure is reported, not fatal).
    pub(crate) fn new(dir: &Path) -> OutputDir {
        let mut out = OutputDir {
            dir: dir.to_owned(),
            open: HashMap::new(),
            tick: 0,
            errors: 0,
            warned: false,
            broken: HashMap::new(),
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

    /// The session's file: named after its sender as known now (a session's name is
    /// its source IP until its HELLO or heartbeat arrives).
    fn path_of(&self, session: &SessionInfo) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.log",
            sanitize(&session.name),
            session.id_hex()
        ))
    }

    /// Appends `bytes` to the session's file.
    pub(crate) fn write(&mut self, session: &SessionInfo, bytes: &[u8]) {
        self.tick += 1;
        let path = self.path_of(session);
        if self.open.get(&session.id).is_some_and(|f| f.path != path) {
            self.close(session.id);
        }
        if !self.open.contains_key(&session.id) {
            if self.open.len() >= MAX_OPEN {
                let lru = self
                    .open
                    .iter()
                    .min_by_key(|(_, f)| f.used)
                    .map(|(k, _)| *k);
                if let Some(k) = lru {
                    self.close(k);
                }
            }
            match OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&path)
            {
                Ok(f) => {
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
                    self.open.insert(session.id, OpenFile { w, path, used: 0 });
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
        if let Err(e) = f.w.write_all(bytes) {
            self.write_failed(session.id, &path, &e);
        }
    }

    /// Closes a session's file (it ended); a later line reopens it for appending.
    pub(crate) fn close(&mut self, id: u64) {
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
    fn names_are_safe() {
        assert_eq!(sanitize("web-1.prod"), "web-1.prod");
        assert_eq!(sanitize("../etc/passwd"), "_.._etc_passwd");
        assert_eq!(sanitize(""), "_");
        assert_eq!(sanitize("a b/c"), "a_b_c");
        assert_eq!(sanitize(&"x".repeat(300)).len(), 64);
    }
}
