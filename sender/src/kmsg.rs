//! `--kmsg`: reading `/dev/kmsg` (one record per `read`, `EPIPE` after an overrun)
//! and the state file that lets a restarted ncu-send resume where it stopped. What
//! to send is [`ncu_proto::kmsg::Reader`]'s.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ncu_proto::kmsg::{self, From, Reader};
use ncu_proto::sender::Sender;
use ncu_proto::wire::LINE_KMSG;

use crate::cli;
use crate::run::RunError;

/// Records read per loop turn at most (then they are sent, and the loop turns).
const RECORDS_PER_TURN: usize = 256;
/// Where the kernel keeps this boot's id.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// `/dev/kmsg`, open, and what was read from it.
pub(crate) struct Kmsg {
    fd: OwnedFd,
    reader: Reader,
    buf: Vec<u8>,
    /// The lines of one turn, back to back, and where each ends.
    lines: Vec<u8>,
    ends: Vec<usize>,
    line: Vec<u8>,
    state: Option<State>,
}

impl Kmsg {
    /// Opens `path` (`/dev/kmsg`) for `config`: at its end for `--kmsg-from now`;
    /// after the state file's record when it is of this boot.
    pub(crate) fn open(path: &Path, config: &cli::Kmsg) -> Result<Kmsg, RunError> {
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| RunError(format!("{}: not a path", path.display())))?;
        // SAFETY: a NUL-terminated path and flags; a non-negative result is a new
        // descriptor that nothing else owns.
        let fd = unsafe {
            libc::open(
                c_path.as_ptr(),
                libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let err = io::Error::last_os_error();
            let hint = match err.raw_os_error() {
                Some(libc::ENOENT) => " (no /dev/kmsg: is devtmpfs mounted on /dev?)",
                Some(libc::EACCES | libc::EPERM) => {
                    " (run as root, or with CAP_SYSLOG when kernel.dmesg_restrict=1)"
                }
                _ => "",
            };
            return Err(RunError(format!(
                "cannot read the kernel log: {}: {err}{hint}",
                path.display()
            )));
        }
        // SAFETY: `fd` was just opened and is ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let state = config.state.as_deref().map(State::open).transpose()?;
        let mut from = config.from;
        if let Some(seq) = state.as_ref().and_then(|s| s.resume) {
            from = From::Seq(seq + 1);
        }
        if from == From::Now {
            // SAFETY: lseek on our descriptor; SEEK_END on /dev/kmsg moves the reader
            // past the last record.
            unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_END) };
        }
        Ok(Kmsg {
            fd,
            reader: Reader::new(from, config.level),
            buf: vec![0; kmsg::MAX_RECORD],
            lines: Vec::new(),
            ends: Vec::new(),
            line: Vec::new(),
            state,
        })
    }

    /// The descriptor to poll.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads the records waiting (up to [`RECORDS_PER_TURN`]) and hands them to the
    /// sender. Returns false when `/dev/kmsg` failed for good.
    pub(crate) fn read(&mut self, sender: &mut Sender, wall_us: u64) -> bool {
        self.lines.clear();
        self.ends.clear();
        let mut ok = true;
        for _ in 0..RECORDS_PER_TURN {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
            let rc = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                )
            };
            if rc > 0 {
                if self.reader.record(&self.buf[..rc as usize], &mut self.line) {
                    self.lines.extend_from_slice(&self.line);
                    self.ends.push(self.lines.len());
                }
                continue;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                _ if rc == 0 => break,
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => break,
                // The ring overwrote records not read yet; the next read says which.
                Some(libc::EPIPE) => self.reader.overrun(),
                _ => {
                    eprintln!("ncu-send: reading /dev/kmsg: {err}; the kernel log stops here");
                    ok = false;
                    break;
                }
            }
        }
        let (lines, ends) = (&self.lines, &self.ends);
        let each = (0..ends.len()).map(|i| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            &lines[start..ends[i]]
        });
        sender.handle_records(LINE_KMSG, each, wall_us);
        ok
    }

    /// After what was read went to the kernel's socket: the state file says so.
    pub(crate) fn sent(&mut self) {
        if let (Some(state), Some(seq)) = (self.state.as_mut(), self.reader.last_sent()) {
            state.save(seq);
        }
    }

    /// At exit: the state file on disk.
    pub(crate) fn close(&mut self) {
        self.sent();
        if let Some(state) = &self.state {
            let _ = state.file.sync_data();
        }
    }

    /// What was read, for `--verbose`.
    pub(crate) fn stats(&self) -> kmsg::Stats {
        self.reader.stats()
    }
}

/// `--kmsg-state FILE`: one line, `<boot id> <sequence number>`, rewritten in place
/// (one `pwrite` of a fixed-width line, so a reader never sees half of one).
struct State {
    path: PathBuf,
    file: File,
    boot_id: String,
    /// The last record sent by a run of this boot.
    resume: Option<u64>,
    saved: Option<u64>,
    warned: bool,
}

impl State {
    fn open(path: &Path) -> Result<State, RunError> {
        let boot_id = std::fs::read_to_string(BOOT_ID)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| RunError(format!("--kmsg-state {}: {e}", path.display())))?;
        let mut text = String::new();
        let _ = io::Read::read_to_string(&mut &file, &mut text);
        let resume = text.split_whitespace().collect::<Vec<_>>();
        let resume = match resume.as_slice() {
            [id, seq] if !boot_id.is_empty() && *id == boot_id => seq.parse().ok(),
            _ => None,
        };
        Ok(State {
            path: path.to_owned(),
            file,
            boot_id,
            resume,
            saved: resume,
            warned: false,
        })
    }

    fn save(&mut self, seq: u64) {
        if self.saved == Some(seq) {
            return;
        }
        let line = format!("{} {seq:020}\n", self.boot_id);
        match self.file.write_all_at(line.as_bytes(), 0) {
            Ok(()) => {
                if self.saved.is_none() {
                    // Whatever the file held before, past this line, goes.
                    let _ = self.file.set_len(line.len() as u64);
                }
                self.saved = Some(seq);
            }
            Err(e) if !self.warned => {
                self.warned = true;
                eprintln!(
                    "ncu-send: --kmsg-state {}: {e}; a restart may send records twice",
                    self.path.display()
                );
            }
            Err(_) => {}
        }
    }
}
