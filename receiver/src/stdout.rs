//! Standard output, written in whole events, surviving a full disk.
//!
//! An event (one output line, or a marker and a line) is held whole or dropped whole:
//! never torn. What a failed or short write left unwritten stays held and goes out
//! first when standard output takes writes again, so nothing already received is lost
//! while the held bytes fit [`HELD_MAX`]. Past that, events are dropped and counted,
//! and the next event written is preceded by a marker saying how many are missing
//! ([`EventOutput::hole`]). A reader that went away (`EPIPE`, `ncu-recv | head`)
//! closes it quietly.

use std::io::{self, Write};

/// Held events are written out once they reach this many bytes (and when the receiver
/// is idle).
pub(crate) const CAPACITY: usize = 128 * 1024;
/// The most bytes held while standard output fails (a full disk): past this, events
/// are dropped and counted.
pub(crate) const HELD_MAX: usize = 4 << 20;

/// Whole events on their way to a writer (standard output).
pub(crate) struct EventOutput<W: Write> {
    inner: W,
    /// [`CAPACITY`] and [`HELD_MAX`] (smaller in tests).
    capacity: usize,
    held_max: usize,
    /// Whole events not yet written (a short write's rest first).
    held: Vec<u8>,
    /// The reader went away: nothing more is written.
    closed: bool,
    /// Writes fail now (until a later attempt succeeds).
    failing: bool,
    /// What the last failure said (for the marker after it, and at exit).
    last_failure: Option<String>,
    /// Events dropped since the last marker.
    hole: u64,
    /// Events dropped in all.
    dropped: u64,
}

impl<W: Write> EventOutput<W> {
    pub(crate) fn new(inner: W) -> EventOutput<W> {
        EventOutput::with_limits(inner, CAPACITY, HELD_MAX)
    }

    fn with_limits(inner: W, capacity: usize, held_max: usize) -> EventOutput<W> {
        EventOutput {
            inner,
            capacity,
            held_max,
            held: Vec::with_capacity(capacity),
            closed: false,
            failing: false,
            last_failure: None,
            hole: 0,
            dropped: 0,
        }
    }

    /// The reader went away (a closed pipe).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Writes fail now (until a later attempt succeeds).
    pub(crate) fn is_failing(&self) -> bool {
        self.failing
    }

    /// Events dropped since the last marker: when above 0, the caller puts a marker
    /// saying so before the next event.
    pub(crate) fn hole(&self) -> u64 {
        self.hole
    }

    /// The error that made the current hole, for its marker.
    pub(crate) fn hole_error(&self) -> &str {
        self.last_failure.as_deref().unwrap_or("")
    }

    /// Events dropped in all.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Adds `marker` (possibly empty) and `event`, whole, or drops the event and counts
    /// it. A non-empty `marker` accepted closes the current hole. Returns whether the
    /// event was taken.
    pub(crate) fn push(&mut self, marker: &[u8], event: &[u8]) -> bool {
        if self.closed {
            return false;
        }
        let need = marker.len() + event.len();
        if !self.failing && self.held.len() + need > self.capacity {
            self.write_out();
            if self.closed {
                return false;
            }
        }
        if self.failing && self.held.len() + need > self.held_max {
            self.hole += 1;
            self.dropped += 1;
            return false;
        }
        self.held.extend_from_slice(marker);
        self.held.extend_from_slice(event);
        if !marker.is_empty() {
            self.hole = 0;
        }
        if !self.failing && self.held.len() >= self.capacity {
            self.write_out();
        }
        true
    }

    /// Writes out what is held (again, after a failure).
    pub(crate) fn flush(&mut self) {
        if !self.closed {
            self.write_out();
        }
    }

    fn write_out(&mut self) {
        let mut written = 0;
        while written < self.held.len() {
            match self.inner.write(&self.held[written..]) {
                Ok(0) => {
                    self.fail(io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    self.closed = true;
                    self.held = Vec::new();
                    return;
                }
                Err(e) => {
                    self.fail(e);
                    break;
                }
            }
        }
        // What went out leaves; the rest of a short write stays first in line.
        self.held.drain(..written);
        // Recovered only when something was written: with nothing held there is no
        // telling.
        if self.held.is_empty() && written > 0 && std::mem::take(&mut self.failing) {
            eprintln!(
                "ncu-recv: standard output takes writes again; {} events were not \
                 written (a marker in the output says where)",
                self.dropped
            );
        }
        if let Err(e) = self.inner.flush() {
            if e.kind() == io::ErrorKind::BrokenPipe {
                self.closed = true;
            }
        }
    }

    fn fail(&mut self, e: io::Error) {
        if !self.failing {
            eprintln!(
                "ncu-recv: cannot write to standard output: {e}; receiving goes on, up to \
                 {} MiB of output is held and written when it can be, past that events \
                 are dropped and counted",
                self.held_max >> 20
            );
        }
        self.last_failure = Some(e.to_string());
        self.failing = true;
    }

    /// At exit, after a last [`EventOutput::flush`]: what could not be written, if
    /// anything.
    pub(crate) fn loss(&self) -> Option<String> {
        let unwritten = self.held.len();
        if self.closed || (self.dropped == 0 && unwritten == 0) {
            return None;
        }
        Some(format!(
            "cannot write to standard output: {}; {} events dropped, {} bytes of output \
             never written",
            self.hole_error(),
            self.dropped,
            unwritten
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A disk that takes `room` more bytes (short writes at the edge), then fails with
    /// ENOSPC until given more room.
    #[derive(Clone, Default)]
    struct Disk {
        bytes: Rc<RefCell<Vec<u8>>>,
        room: Rc<RefCell<usize>>,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut room = self.room.borrow_mut();
            if *room == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(*room);
            *room -= n;
            self.bytes.borrow_mut().extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn event(i: usize, len: usize) -> Vec<u8> {
        let mut e = format!("event {i} ").into_bytes();
        e.resize(len - 1, b'x');
        e.push(b'\n');
        e
    }

    #[test]
    fn a_full_disk_holds_whole_events_then_marks_the_hole_and_goes_on() {
        let disk = Disk::default();
        *disk.room.borrow_mut() = 10_000;
        let mut out = EventOutput::new(disk.clone());
        let len = 1000;
        let mut taken = Vec::new();
        let mut i = 0;
        // Far more than the disk and the held bytes take together.
        while i < (HELD_MAX + 4 * CAPACITY) / len {
            let marker: &[u8] = if out.hole() > 0 { b"MARK\n" } else { b"" };
            if out.push(marker, &event(i, len)) {
                taken.push(i);
            }
            i += 1;
        }
        out.flush();
        assert!(out.is_failing());
        let dropped = out.dropped();
        assert!(dropped > 0);
        assert_eq!(taken.len() as u64 + dropped, i as u64);
        // Room again: the held events go out first, then the marker, then new events.
        *disk.room.borrow_mut() = usize::MAX;
        out.flush();
        assert!(!out.is_failing());
        assert_eq!(out.hole(), dropped);
        assert!(out.push(b"MARK\n", &event(i, len)));
        taken.push(i);
        assert!(out.push(b"", &event(i + 1, len)));
        taken.push(i + 1);
        out.flush();
        assert_eq!(out.loss(), Some(format!(
            "cannot write to standard output: {}; {dropped} events dropped, 0 bytes of output never written",
            io::Error::from_raw_os_error(libc::ENOSPC)
        )));
        let bytes = disk.bytes.borrow();
        let lines: Vec<&[u8]> = bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        // Every line whole, in order: the events taken, one marker where the hole is.
        let mut want: Vec<Vec<u8>> = Vec::new();
        for &t in &taken {
            if t == i {
                want.push(b"MARK".to_vec());
            }
            let mut e = event(t, len);
            e.pop();
            want.push(e);
        }
        assert_eq!(lines.len(), want.len());
        for (got, want) in lines.iter().zip(&want) {
            assert_eq!(*got, want.as_slice());
        }
        // The hole is exactly the events dropped: between the last held and `i`.
        let held_last = taken[taken.len() - 3];
        assert_eq!((i - 1 - held_last) as u64, dropped);
    }

    /// Random events, random room on the disk (none, a little, plenty), flushes in
    /// between: what reaches the disk is exactly the events taken, whole and in order,
    /// with a marker before the first event after each hole counting that hole; the
    /// events not taken are the ones counted dropped. Seed printed on failure.
    #[test]
    fn against_a_model_under_random_room_and_sizes() {
        let (mut holes_marked, mut all_dropped) = (0, 0);
        for seed in 1..=200u64 {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let disk = Disk::default();
            // Small limits, so that a few events fill them.
            let mut out = EventOutput::with_limits(disk.clone(), 4096, 16_384);
            let mut want: Vec<u8> = Vec::new();
            let (mut dropped, mut unmarked) = (0u64, 0u64);
            for i in 0..2000 {
                match next(10) {
                    0 => *disk.room.borrow_mut() = 0,
                    1 => *disk.room.borrow_mut() = next(3_000) as usize,
                    2 => *disk.room.borrow_mut() = usize::MAX,
                    3 => out.flush(),
                    _ => {
                        let len = if next(50) == 0 {
                            16_000 + next(8_000) as usize
                        } else {
                            10 + next(1000) as usize
                        };
                        let e = event(i, len);
                        let marker = match out.hole() {
                            0 => Vec::new(),
                            n => format!("MARK {n}\n").into_bytes(),
                        };
                        assert_eq!(out.hole(), unmarked, "seed {seed}");
                        if out.push(&marker, &e) {
                            holes_marked += u64::from(!marker.is_empty());
                            want.extend_from_slice(&marker);
                            want.extend_from_slice(&e);
                            unmarked = 0;
                        } else {
                            dropped += 1;
                            unmarked += 1;
                        }
                    }
                }
            }
            *disk.room.borrow_mut() = usize::MAX;
            out.flush();
            assert_eq!(out.dropped(), dropped, "seed {seed}");
            assert_eq!(out.hole(), unmarked, "seed {seed}");
            assert!(
                *disk.bytes.borrow() == want,
                "seed {seed}: the disk differs from the model"
            );
            assert_eq!(out.loss().is_some(), dropped > 0, "seed {seed}");
            all_dropped += dropped;
        }
        // The runs did drop events and mark holes (else this tested nothing of it).
        assert!(
            all_dropped > 0 && holes_marked > 0,
            "{all_dropped} {holes_marked}"
        );
    }

    #[test]
    fn a_short_write_never_tears_an_event() {
        let disk = Disk::default();
        *disk.room.borrow_mut() = 1500; // one and a half events
        let mut out = EventOutput::new(disk.clone());
        for i in 0..3 {
            assert!(out.push(b"", &event(i, 1000)));
        }
        out.flush();
        assert!(out.is_failing());
        assert!(out
            .loss()
            .unwrap()
            .ends_with("0 events dropped, 1500 bytes of output never written"));
        *disk.room.borrow_mut() = usize::MAX;
        out.flush();
        assert_eq!(out.loss(), None);
        let want: Vec<u8> = (0..3).flat_map(|i| event(i, 1000)).collect();
        assert_eq!(*disk.bytes.borrow(), want);
    }

    #[test]
    fn a_closed_reader_closes_quietly() {
        struct Gone;
        impl Write for Gone {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut out = EventOutput::new(Gone);
        assert!(out.push(b"", b"line\n"));
        out.flush();
        assert!(out.is_closed());
        assert!(!out.push(b"", b"line\n"));
        assert_eq!(out.loss(), None);
    }
}
