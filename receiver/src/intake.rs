//! The receive path in two: a thread that only takes datagrams off the socket
//! (`recvmmsg`, [`Batch`]) and packs them into chunks, and the main loop that
//! reassembles and writes them out. While the main loop writes (a slow terminal, a
//! disk, a burst of events), the thread keeps the socket drained into memory of
//! ncu-recv's own, which no `net.core.rmem_max` caps: a receiver run as a service
//! without `CAP_NET_ADMIN` gets only that cap's receive buffer (208 KiB by default).
//!
//! Datagrams are handed over in the order they were received; ordering and every
//! count per session are the main loop's, unchanged. While the main loop is busy,
//! the thread appends to the last chunk waiting, so a backlog is packed densely; the
//! chunks are bounded ([`RING_BYTES`] in all): when they are all full and waiting,
//! the thread waits for one to come back, the socket's own buffer takes what
//! arrives meanwhile, and what it cannot take is the kernel's drop count, reported
//! as before. Each such wait is counted ([`RingCounts::full`]) and reported
//! beside the kernel's drops.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::net::{Batch, BATCH};

/// How long the thread leaves the socket alone after it found it drained; and a
/// turn of the main loop this long makes it busy (the thread takes over).
const PAUSE: Duration = Duration::from_micros(200);
/// While the main loop keeps up (waiting whenever the thread looks), the thread's
/// pause doubles up to this (a 208 KiB socket buffer holds some 400 datagrams, 2 ms
/// at 200,000/s).
const PAUSE_MAX: Duration = Duration::from_micros(1600);
/// The main loop waiting this long for anything means sparse traffic: the thread
/// goes back to sleep.
const QUIET: Duration = Duration::from_millis(2);
/// A wait that a datagram ended within this time means a stream (datagrams less
/// than this apart)...
const DENSE: Duration = Duration::from_millis(1);
/// ... and the loop lets this long pass before it reads, so that a turn takes a
/// batch instead of one datagram: below the socket's full rate the loop otherwise
/// keeps up one datagram at a time and pays a read, a wait and a write for each
/// (150,000 records/s: 4.1 us of CPU per record, 2.3 us with this). A line after a
/// quiet spell is read at once; 200,000 datagrams/s queue 40 in this time (a
/// 208 KiB socket buffer holds some 270 netconsole records).
const LINGER: Duration = Duration::from_micros(200);
/// Bytes of one chunk (a larger datagram gets a chunk of its own size).
const CHUNK_BYTES: usize = 256 << 10;
/// Datagrams in one chunk at most (their metadata is bounded too).
const CHUNK_ITEMS: usize = 2048;
/// Datagrams waiting for the main loop, at most this much memory in all (chunks of
/// [`CHUNK_BYTES`] and [`CHUNK_ITEMS`]): 16 MiB, some 125,000 records of 96 bytes
/// (most of a second of a fleet's peak), allocated only as a backlog needs it.
pub(crate) const RING_BYTES: usize = 16 << 20;

/// One datagram in a [`Chunk`].
#[derive(Clone, Copy)]
pub(crate) struct Item {
    pub(crate) from: SocketAddr,
    start: u32,
    len: u32,
    /// The datagram was larger than the receive slot.
    pub(crate) truncated: bool,
}

/// Datagrams received one after another, their bytes packed.
#[derive(Default)]
pub(crate) struct Chunk {
    bytes: Vec<u8>,
    items: Vec<Item>,
}

impl Chunk {
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Item, &[u8])> + '_ {
        self.items.iter().map(move |i| {
            let start = i.start as usize;
            (*i, &self.bytes[start..start + i.len as usize])
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    fn fits(&self, len: usize) -> bool {
        self.items.len() < CHUNK_ITEMS && self.bytes.capacity() - self.bytes.len() >= len
    }

    fn push(&mut self, from: SocketAddr, bytes: &[u8], truncated: bool) {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(bytes);
        self.items.push(Item {
            from,
            start,
            len: bytes.len() as u32,
            truncated,
        });
    }
}

/// What the receiving thread did.
#[derive(Default)]
pub(crate) struct RingCounts {
    /// Datagrams it took off the socket while the main loop was busy.
    pub(crate) taken: AtomicU64,
    /// Times every chunk was full and it waited for one to come back.
    pub(crate) full: AtomicU64,
}

/// What both ends share.
struct Ring {
    /// Chunks waiting for the main loop, oldest first; the thread appends to the
    /// last one.
    waiting: VecDeque<Chunk>,
    /// Chunks given back, empty.
    free: Vec<Chunk>,
    /// Chunk capacity allocated, bytes and metadata (at most [`RING_BYTES`]; or one
    /// chunk, whatever its size).
    allocated: usize,
    /// The thread is reading the socket (without the lock): what it reads comes
    /// into `waiting` before anything newer, so the main loop does not read the
    /// socket itself meanwhile.
    reading: bool,
}

struct Shared {
    ring: Mutex<Ring>,
    /// Signalled when a chunk is given back (the thread may wait for one).
    given_back: Condvar,
    /// Readable while chunks wait (an eventfd the thread counts up).
    ready: OwnedFd,
    counts: Arc<RingCounts>,
    /// Traffic is dense or the main loop falls behind: the thread keeps the socket
    /// drained whenever the main loop is not waiting. Set (under the ring's lock,
    /// then `busy` signalled) when the main loop saw a stream (a wait a datagram
    /// ended within [`DENSE`]), took a full batch or ran a long turn; cleared when
    /// it then waited [`QUIET`] or longer for anything to come.
    main_busy: AtomicBool,
    /// The main loop is waiting (in [`Intake::wait`]): it reads the socket itself.
    main_waiting: AtomicBool,
    /// Signalled when `main_busy` is set.
    busy: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The main loop's end: datagrams in the order received.
pub(crate) struct Intake {
    shared: Arc<Shared>,
    socket: RawFd,
    /// The main loop's own receive buffers, for what it reads itself.
    batch: Batch,
    errors_reported: bool,
    /// When the main loop's current turn began (it stopped waiting).
    turn_start: Instant,
    /// `main_busy` is set.
    told_busy: bool,
}

impl Intake {
    /// Starts the receiving thread on `socket` (non-blocking, datagrams of up to
    /// `slot` bytes; larger ones are flagged truncated).
    pub(crate) fn start(socket: RawFd, slot: usize) -> io::Result<Intake> {
        // SAFETY: eventfd(2) with valid flags; the descriptor is owned below.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        let shared = Arc::new(Shared {
            ring: Mutex::new(Ring {
                waiting: VecDeque::new(),
                free: Vec::new(),
                allocated: 0,
                reading: false,
            }),
            given_back: Condvar::new(),
            // SAFETY: a fresh descriptor nothing else owns.
            ready: unsafe { OwnedFd::from_raw_fd(efd) },
            counts: Arc::default(),
            main_busy: AtomicBool::new(false),
            main_waiting: AtomicBool::new(false),
            busy: Condvar::new(),
        });
        let thread = shared.clone();
        std::thread::Builder::new()
            .name("ncu-recv-rx".into())
            .spawn(move || receive(&thread, socket, slot))?;
        Ok(Intake {
            shared,
            socket,
            batch: Batch::new(slot),
            errors_reported: false,
            turn_start: Instant::now(),
            told_busy: false,
        })
    }

    /// Hands the oldest datagrams to `f` (source, bytes, truncated): a chunk the
    /// thread took, else (with `socket_too`) what the socket holds now, read here.
    /// Returns how many (0: nothing waits).
    pub(crate) fn take(
        &mut self,
        socket_too: bool,
        mut f: impl FnMut(SocketAddr, &[u8], bool),
    ) -> usize {
        let mut ring = self.shared.lock();
        if let Some(chunk) = ring.waiting.pop_front() {
            drop(ring);
            for (item, bytes) in chunk.iter() {
                f(item.from, bytes, item.truncated);
            }
            let n = chunk.len();
            self.give_back(chunk);
            return n;
        }
        if !socket_too || ring.reading {
            // The thread's read in flight comes into the ring first (`ready`).
            return 0;
        }
        // Read under the ring's lock: whatever the thread takes after this is newer.
        let n = match self.batch.recv(self.socket) {
            Ok(n) => n,
            Err(e) => {
                report_once(&mut self.errors_reported, &e);
                0
            }
        };
        drop(ring);
        // A full batch (more waits: dense traffic) or a long turn: the thread helps
        // until traffic is sparse again. A lone line wakes no thread.
        if n == BATCH || self.turn_start.elapsed() >= PAUSE {
            self.tell_busy();
        }
        for (meta, bytes) in self.batch.iter() {
            f(meta.from, bytes, meta.truncated);
        }
        n
    }

    /// Waits until a datagram or a chunk waits, `wake` is readable, or `timeout`
    /// passes. Meanwhile the thread leaves the socket to this loop.
    pub(crate) fn wait(&mut self, wake: RawFd, timeout: Option<Duration>) -> io::Result<()> {
        let mut fds = [
            ncu_host::pollfd(self.socket, libc::POLLIN),
            ncu_host::pollfd(self.shared.ready.as_raw_fd(), libc::POLLIN),
            ncu_host::pollfd(wake, libc::POLLIN),
        ];
        let since = Instant::now();
        self.shared.main_waiting.store(true, Ordering::SeqCst);
        let waited = ncu_host::poll(&mut fds, timeout);
        self.shared.main_waiting.store(false, Ordering::SeqCst);
        self.turn_start = Instant::now();
        let stream =
            fds[0].revents & libc::POLLIN != 0 && self.turn_start.duration_since(since) < DENSE;
        if stream {
            std::thread::sleep(LINGER);
            self.turn_start = Instant::now();
            // A stream: the thread keeps the socket drained while this loop works
            // (a write to a slow disk must not leave it unread).
            self.tell_busy();
        }
        if self.told_busy && self.turn_start.duration_since(since) >= QUIET {
            // Sparse traffic again: the thread sleeps until told otherwise.
            self.shared.main_busy.store(false, Ordering::SeqCst);
            self.told_busy = false;
        }
        if fds[1].revents & libc::POLLIN != 0 {
            let mut n = [0u8; 8];
            // Cleared before looking again: a chunk queued later counts it up anew.
            // SAFETY: reading 8 bytes into an 8-byte buffer.
            let _ = unsafe { libc::read(self.shared.ready.as_raw_fd(), n.as_mut_ptr().cast(), 8) };
        }
        waited
    }

    /// Has the thread keep the socket drained whenever this loop is not waiting,
    /// until traffic is sparse again.
    fn tell_busy(&mut self) {
        if !self.told_busy {
            self.told_busy = true;
            let ring = self.shared.lock();
            self.shared.main_busy.store(true, Ordering::SeqCst);
            drop(ring);
            self.shared.busy.notify_one();
        }
    }

    fn give_back(&mut self, mut chunk: Chunk) {
        chunk.bytes.clear();
        chunk.items.clear();
        self.shared.lock().free.push(chunk);
        self.shared.given_back.notify_one();
    }

    /// What the thread did, for the summary, report and metrics.
    pub(crate) fn counts(&self) -> Arc<RingCounts> {
        self.shared.counts.clone()
    }
}

fn report_once(reported: &mut bool, e: &io::Error) {
    // Nothing a peer sends should stop the receiver: say it once.
    if !*reported {
        eprintln!("ncu-recv: receive error (going on): {e}");
        *reported = true;
    }
}

/// The receiving thread: under dense traffic (told by `main_busy`), socket to ring
/// whenever the main loop is not waiting. Otherwise it sleeps on `busy` and the
/// main loop reads the socket itself: a lone line wakes no second thread.
fn receive(shared: &Shared, socket: RawFd, slot: usize) {
    let mut errors_reported = false;
    let mut batch = Batch::new(slot);
    let mut pause = PAUSE;
    loop {
        if !shared.main_busy.load(Ordering::SeqCst) {
            let ring = shared.lock();
            let ring = shared
                .busy
                .wait_while(ring, |_| !shared.main_busy.load(Ordering::SeqCst))
                .unwrap_or_else(|e| e.into_inner());
            drop(ring);
        }
        let mut fds = [ncu_host::pollfd(socket, libc::POLLIN)];
        let _ = ncu_host::poll(&mut fds, Some(PAUSE_MAX));
        if !shared.main_busy.load(Ordering::SeqCst) {
            continue;
        }
        if shared.main_waiting.load(Ordering::SeqCst) {
            // The main loop wakes for it too.
            std::thread::sleep(pause);
            pause = (pause * 2).min(PAUSE_MAX);
            continue;
        }
        pause = PAUSE;
        // The read itself outside the lock (the main loop gives chunks back and
        // takes them meanwhile); `reading` keeps it from reading the socket too.
        shared.lock().reading = true;
        let n = match batch.recv(socket) {
            Ok(n) => n,
            Err(e) => {
                report_once(&mut errors_reported, &e);
                0
            }
        };
        let mut ring = shared.lock();
        let was_empty = ring.waiting.is_empty();
        for (meta, bytes) in batch.iter() {
            if !ring.waiting.back().is_some_and(|c| c.fits(bytes.len())) {
                ring = room(shared, ring, bytes.len());
            }
            if let Some(chunk) = ring.waiting.back_mut() {
                chunk.push(meta.from, bytes, meta.truncated);
            }
        }
        // Only now, the whole batch in the ring (`room` may have waited for a
        // chunk meanwhile), may the main loop read the socket again.
        ring.reading = false;
        drop(ring);
        shared.counts.taken.fetch_add(n as u64, Ordering::Relaxed);
        if n > 0 && was_empty {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writing 8 bytes to an eventfd.
            let _ = unsafe { libc::write(shared.ready.as_raw_fd(), one.as_ptr().cast(), 8) };
        }
        // A batch short of full: the socket is drained for now. A short pause lets
        // the next batch gather (the socket's buffer holds far more than a pause's
        // worth): a wake-up per batch rather than per datagram.
        if n < BATCH {
            std::thread::sleep(PAUSE);
        }
    }
}

/// Puts an empty chunk with room for `len` bytes at the end of the waiting ones:
/// one given back, else a new one while the ring has room, else (the ring full:
/// counted) the next one the main loop gives back.
fn room<'a>(
    shared: &'a Shared,
    mut ring: MutexGuard<'a, Ring>,
    len: usize,
) -> MutexGuard<'a, Ring> {
    loop {
        if let Some(i) = ring.free.iter().position(|c| c.bytes.capacity() >= len) {
            let chunk = ring.free.swap_remove(i);
            ring.waiting.push_back(chunk);
            return ring;
        }
        let size = CHUNK_BYTES.max(len);
        let cost = size + CHUNK_ITEMS * std::mem::size_of::<Item>();
        if ring.allocated + cost <= RING_BYTES || ring.allocated == 0 {
            ring.allocated += cost;
            ring.waiting.push_back(Chunk {
                bytes: Vec::with_capacity(size),
                items: Vec::with_capacity(CHUNK_ITEMS),
            });
            return ring;
        }
        if ring.free.is_empty() {
            shared.counts.full.fetch_add(1, Ordering::Relaxed);
            // The main loop must see what waits before it can give one back.
            let one = 1u64.to_ne_bytes();
            // SAFETY: writing 8 bytes to an eventfd.
            let _ = unsafe { libc::write(shared.ready.as_raw_fd(), one.as_ptr().cast(), 8) };
            ring = shared
                .given_back
                .wait_while(ring, |r| r.free.is_empty())
                .unwrap_or_else(|e| e.into_inner());
        } else {
            // Only chunks too small for this datagram were given back: one makes
            // way for a larger one.
            if let Some(small) = ring.free.pop() {
                ring.allocated -=
                    small.bytes.capacity() + CHUNK_ITEMS * std::mem::size_of::<Item>();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    /// A datagram that ends the main loop's wait at once is a stream: the thread is
    /// told to keep the socket drained from then on, before the turn that may
    /// block in a write (a moderate stream never fills a batch, and its turns are
    /// short until one blocks).
    #[test]
    fn a_stream_has_the_thread_keep_the_socket_drained() {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_nonblocking(true).expect("non-blocking");
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let (wake, _wake_tx) = std::os::unix::net::UnixDatagram::pair().expect("a pair");
        let mut intake = Intake::start(socket.as_raw_fd(), 2048).expect("the thread");
        // Quiet: a wait that times out tells the thread nothing.
        intake
            .wait(wake.as_raw_fd(), Some(Duration::from_millis(5)))
            .expect("wait");
        assert!(!intake.shared.main_busy.load(Ordering::SeqCst));
        sender
            .send_to(b"6,1,0,-;a line\n", socket.local_addr().expect("addr"))
            .expect("send");
        intake
            .wait(wake.as_raw_fd(), Some(Duration::from_secs(5)))
            .expect("wait");
        assert!(intake.shared.main_busy.load(Ordering::SeqCst));
        let mut got = Vec::new();
        while got.is_empty() {
            intake.take(true, |_, bytes, _| got.push(bytes.to_vec()));
        }
        assert_eq!(got, [b"6,1,0,-;a line\n".to_vec()]);
    }
}
