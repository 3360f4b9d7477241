//! `-- COMMAND`: running it with its stdout and stderr on pipes of their own, and
//! noticing its end (a pidfd where the kernel has them).

use std::ffi::OsString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, ExitStatus, Stdio};

/// COMMAND, once started.
pub(crate) struct Wrapped {
    pub(crate) child: Child,
    /// Readable when COMMAND exits (Linux 5.3+); polled (every 20 ms) without.
    pub(crate) pidfd: Option<OwnedFd>,
    pub(crate) status: Option<ExitStatus>,
    pub(crate) forwarded: bool,
}

impl Wrapped {
    pub(crate) fn new(child: Child) -> Wrapped {
        // SAFETY: pidfd_open takes a pid and flags; a non-negative result is a new fd
        // that nothing else owns.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
        let pidfd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        Wrapped {
            child,
            pidfd,
            status: None,
            forwarded: false,
        }
    }

    pub(crate) fn forward(&mut self, sig: i32) {
        self.forwarded = true;
        // SAFETY: kill takes a pid and a signal; the child is not yet reaped, so the pid
        // is still its own.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    pub(crate) fn check_exit(&mut self) {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
    }
}

/// Starts COMMAND with its stdout and stderr on two pipes (so lines from each stay
/// whole); its standard input is ours.
pub(crate) fn spawn(argv: &[OsString]) -> io::Result<(Child, OwnedFd, OwnedFd)> {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = OwnedFd::from(child.stdout.take().expect("stdout was piped"));
    let err = OwnedFd::from(child.stderr.take().expect("stderr was piped"));
    Ok((child, out, err))
}

pub(crate) fn command_line(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
