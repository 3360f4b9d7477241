//! SIGINT, SIGTERM and SIGHUP (a closed terminal), turned into a readable descriptor
//! for `poll(2)`: all three end ncu-send the same way, with END naming the signal.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Catches SIGINT, SIGTERM and SIGHUP. SIGPIPE is already ignored by the Rust runtime, so a
/// closed standard output gives `EPIPE`.
pub(crate) struct Signals {
    wake: UnixStream,
    last: Arc<AtomicUsize>,
}

impl Signals {
    /// Installs the handlers.
    pub(crate) fn install() -> io::Result<Signals> {
        let (wake, write) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let last = Arc::new(AtomicUsize::new(0));
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            // The flag is set before the byte is written: who wakes up sees it.
            signal_hook::flag::register_usize(sig, Arc::clone(&last), sig as usize)?;
            signal_hook::low_level::pipe::register(sig, write.try_clone()?)?;
        }
        Ok(Signals { wake, last })
    }

    /// The descriptor to poll for reading.
    pub(crate) fn fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// How many signals arrived since the last call, and the last one.
    pub(crate) fn take(&mut self) -> (usize, i32) {
        let mut buf = [0u8; 64];
        let mut count = 0;
        while let Ok(n @ 1..) = self.wake.read(&mut buf) {
            count += n;
        }
        (count, self.last.load(Ordering::SeqCst) as i32)
    }
}
