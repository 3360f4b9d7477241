//! `bench-sender`: measures ncu-send on loopback, side by side in one run with
//!
//! - (a) a bare loop of `sendto` calls, one per line, with the datagram sizes
//!   `ncu-send --no-pack` sends (the machine's limit): lines per second;
//! - (b) `nc -u` (netcat-openbsd) on the same 200,000-line, 24 MB dmesg-like log:
//!   time from start until the sink has it all (and lines delivered);
//! - (c) `nc -u` again for per-line latency, one line every 10 ms: from the write into
//!   the sender's stdin to the datagram read at a plain UDP socket;
//! - (d) ncu-send's peak RSS (and RSS over time) while it streams 1 GB;
//! - (r) recovery's cost with no loss: the packed log and `--no-pack` lines/s with
//!   the default resend ring against `--resend-buffer 0`, alternating in one run, and
//!   the peak RSS with the default 4 MiB ring.
//!
//! Drained sinks receive with `recvmmsg`, as a real receiver does. ncu-send times are
//! taken to the arrival of END at the sink: with recovery on (the default) ncu-send
//! lingers after END (up to 1 s without NACKs), which is not sending time. nc's are
//! taken to the arrival of its last datagram, so both include the sink's work.
//!
//! Run it through `bench/sender.sh`, which builds in release mode and installs nc.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ncu_proto::framer::{Framer, Outbox};

mod log;
mod rusage;
use log::dmesg_like;
use ncu_proto::wire::{Payload, Repr};
use rusage::wait_cpu;

/// Lines of the dmesg-like log.
const LOG_LINES: usize = 200_000;
/// ncu's bytes per line in a `--no-pack` datagram: the header and one line record.
const NCU_OVERHEAD: usize = ncu_proto::wire::HEADER_LEN + ncu_proto::wire::LINE_RECORD_HEADER_LEN;

struct Options {
    ncu: PathBuf,
    nc: String,
    rss: bool,
    /// More builds of ncu-send to time beside it in (c), e.g. to compare a change.
    also: Vec<PathBuf>,
    /// Which parts to run: letters a, b, c, d, r.
    only: String,
    rss_bytes: u64,
    runs: usize,
    latency_lines: usize,
}

fn main() {
    let opts = parse_args();
    let log = dmesg_like(LOG_LINES);
    let dir = std::env::temp_dir().join(format!("ncu-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let file = dir.join("dmesg.log");
    std::fs::write(&file, &log).expect("the log written");
    println!(
        "log: {} lines, {:.1} MB ({}); ncu-send: {}",
        LOG_LINES,
        log.len() as f64 / 1e6,
        file.display(),
        opts.ncu.display()
    );

    let part = |c: char| opts.only.contains(c);
    if part('a') {
        throughput(&opts, &log, &file);
    }
    if part('b') {
        bulk(&opts, &log, &file);
    }
    if part('c') {
        latency(&opts);
    }
    if part('d') && opts.rss {
        rss(&opts, &log);
    }
    if part('r') {
        recovery_cost(&opts, &log, &file);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn parse_args() -> Options {
    let mut opts = Options {
        ncu: std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("ncu-send")))
            .unwrap_or_else(|| "ncu-send".into()),
        nc: "nc".into(),
        rss: true,
        also: Vec::new(),
        only: "abcdr".into(),
        rss_bytes: 1_000_000_000,
        runs: 5,
        latency_lines: 400,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&arg));
        match arg.as_str() {
            "--ncu" => opts.ncu = value().into(),
            "--nc" => opts.nc = value(),
            "--skip-rss" => opts.rss = false,
            "--also" => opts.also.push(value().into()),
            "--only" => opts.only = value(),
            "--rss-bytes" => opts.rss_bytes = value().parse().unwrap_or_else(|_| usage(&arg)),
            "--runs" => opts.runs = value().parse().unwrap_or_else(|_| usage(&arg)),
            "--latency-lines" => {
                opts.latency_lines = value().parse().unwrap_or_else(|_| usage(&arg))
            }
            _ => usage(&arg),
        }
    }
    opts
}

fn usage(arg: &str) -> ! {
    eprintln!(
        "bench-sender: bad argument {arg:?}\nusage: bench-sender [--ncu PATH] [--nc PATH] \
         [--runs N] [--latency-lines N] [--also PATH]... [--skip-rss] [--rss-bytes N] [--only abcdr]"
    );
    std::process::exit(2)
}

fn lines(log: &[u8]) -> impl Iterator<Item = &[u8]> {
    log.split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

/// A UDP socket on 127.0.0.1 with an 8 MiB receive buffer; optionally drained by a
/// thread that counts what arrives.
struct Sink {
    socket: Arc<UdpSocket>,
    stop: Arc<AtomicBool>,
    counter: Option<std::thread::JoinHandle<u64>>,
    /// When the first END datagram arrived (drained sinks).
    end_at: Arc<std::sync::Mutex<Option<Instant>>>,
    /// When the last datagram arrived (drained sinks).
    last_at: Arc<std::sync::Mutex<Option<Instant>>>,
}

/// What a drained sink counts.
#[derive(Clone, Copy)]
enum Count {
    /// Lines in ncu datagrams.
    NcuLines,
    /// Newlines in raw datagrams (nc).
    Newlines,
}

impl Sink {
    fn new() -> Sink {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("a loopback socket");
        let size: libc::c_int = 8 << 20;
        // SAFETY: a valid socket and a c_int option of the size given.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Sink {
            socket: Arc::new(socket),
            stop: Arc::new(AtomicBool::new(false)),
            counter: None,
            end_at: Arc::default(),
            last_at: Arc::default(),
        }
    }

    fn drained(count: Count) -> Sink {
        let mut sink = Sink::new();
        let socket = Arc::clone(&sink.socket);
        let stop = Arc::clone(&sink.stop);
        let end_at = Arc::clone(&sink.end_at);
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("a timeout");
        let last_at = Arc::clone(&sink.last_at);
        sink.counter = Some(std::thread::spawn(move || {
            // recvmmsg, as a real receiver drains: the sink's own cost per datagram
            // is in every figure timed to an arrival.
            const BATCH: usize = 32;
            let mut bufs = vec![vec![0u8; 65_536]; BATCH];
            let mut total = 0u64;
            let mut idle_since = None;
            loop {
                let lens = recv_batch(&socket, &mut bufs);
                if lens.is_empty() {
                    if stop.load(Ordering::SeqCst) {
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_millis(100) {
                            return total;
                        }
                    }
                    continue;
                }
                idle_since = None;
                let now = Instant::now();
                *last_at.lock().expect("not poisoned") = Some(now);
                for (buf, &n) in bufs.iter().zip(&lens) {
                    let buf = &buf[..n];
                    // An ncu END (kind 4): the sender is done sending.
                    if n > 4 && buf[..3] == *b"NCU" && buf[4] == 4 {
                        end_at.lock().expect("not poisoned").get_or_insert(now);
                    }
                    total += match count {
                        Count::Newlines => memchr_count(buf),
                        Count::NcuLines => match Repr::parse(buf) {
                            Ok(Repr {
                                payload: Payload::Lines { count, .. },
                                ..
                            }) => u64::from(count),
                            _ => 0,
                        },
                    }
                }
            }
        }));
        sink
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("bound")
    }

    /// When the first END arrived, if one did.
    fn end_at(&self) -> Option<Instant> {
        *self.end_at.lock().expect("not poisoned")
    }

    /// When the last datagram has arrived: waits until the socket has been quiet
    /// for 100 ms.
    fn last_arrival(&self) -> Option<Instant> {
        let give_up = Instant::now() + Duration::from_secs(5);
        loop {
            let last = *self.last_at.lock().expect("not poisoned");
            if last.is_some_and(|t| t.elapsed() > Duration::from_millis(100))
                || Instant::now() > give_up
            {
                return last;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the counter once the socket is quiet; what it counted.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.counter
            .take()
            .map(|h| h.join().expect("the counter"))
            .unwrap_or(0)
    }
}

/// Up to `bufs.len()` datagrams with one `recvmmsg` (waiting up to the socket's read
/// timeout for the first); their lengths (none on timeout).
fn recv_batch(socket: &UdpSocket, bufs: &mut [Vec<u8>]) -> Vec<usize> {
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: an all-zero mmsghdr is a valid "no address, no control" header.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; iovs.len()];
    for (m, iov) in msgs.iter_mut().zip(&mut iovs) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every header points at one iovec over a live buffer of its length.
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    msgs[..n.max(0) as usize]
        .iter()
        .map(|m| m.msg_len as usize)
        .collect()
}

fn memchr_count(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Runs ncu-send on `file` sending to the drained `sink` (its address last in
/// `args`): the time from start to END's arrival (the linger after it is not sending),
/// else the wall time.
fn time_ncu(program: &Path, args: &[String], file: &Path, sink: &Sink) -> Duration {
    time_ncu_cpu(program, args, file, sink).0
}

/// As [`time_ncu`], and the process's CPU time (user + system, seconds).
fn time_ncu_cpu(program: &Path, args: &[String], file: &Path, sink: &Sink) -> (Duration, f64) {
    let start = Instant::now();
    let (wall, cpu) = run_measured(program, args, file);
    let took = sink
        .end_at()
        .map(|end| end.saturating_duration_since(start))
        .unwrap_or(wall);
    (took, cpu)
}

/// Runs a sender on `file` as standard input; its wall time.
fn time_run(program: &Path, args: &[String], file: &Path) -> Duration {
    run_measured(program, args, file).0
}

/// Runs a sender on `file` as standard input; its wall time and CPU time (user +
/// system). Panics unless it exits 0.
fn run_measured(program: &Path, args: &[String], file: &Path) -> (Duration, f64) {
    let input = std::fs::File::open(file).expect("the log");
    let start = Instant::now();
    let child = Command::new(program)
        .args(args)
        .stdin(input)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let cpu = wait_cpu(child, false);
    (start.elapsed(), cpu)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// (a) `--no-pack` lines per second against a bare sendto loop.
fn throughput(opts: &Options, log: &[u8], file: &Path) {
    println!(
        "\n(a) one line per datagram, {LOG_LINES} lines, loopback, median of {} runs",
        opts.runs
    );
    let socket = UdpSocket::bind("127.0.0.1:0").expect("a socket");
    let payloads: Vec<Vec<u8>> = lines(log)
        .map(|l| vec![b'x'; l.len() + NCU_OVERHEAD])
        .collect();
    let (mut bare, mut ncu) = (Vec::new(), Vec::new());
    for _ in 0..opts.runs {
        // Drained, for both: ncu-send's time runs to END's arrival.
        let sink = Sink::drained(Count::NcuLines);
        let dest = sink.addr();
        let start = Instant::now();
        for p in &payloads {
            let _ = socket.send_to(p, dest);
        }
        bare.push(payloads.len() as f64 / start.elapsed().as_secs_f64());
        sink.finish();
        let sink = Sink::drained(Count::NcuLines);
        let args = no_pack_args(&[], sink.addr());
        let took = time_ncu(&opts.ncu, &args, file, &sink);
        sink.finish();
        ncu.push(LOG_LINES as f64 / took.as_secs_f64());
    }
    let (bare, ncu) = (median(bare), median(ncu));
    println!("    sendto loop (in-process)      {:>9.0} lines/s", bare);
    println!("    ncu-send --no-pack            {:>9.0} lines/s", ncu);
    println!(
        "    ratio ncu-send / sendto loop  {:>9.2}   (goal >= 0.80)",
        ncu / bare
    );
}

/// (b) the whole log, packed, against `nc -u`; against ncu-send without GSO; and
/// against the same datagrams sent by an in-process `sendmmsg` loop without GSO.
fn bulk(opts: &Options, log: &[u8], file: &Path) {
    println!(
        "\n(b) the whole log (packed) vs nc -u, median of {} runs",
        opts.runs
    );
    let nc_args = |addr: SocketAddr| -> Vec<String> {
        [
            "-u",
            "-q",
            "0",
            &addr.ip().to_string(),
            &addr.port().to_string(),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let datagrams = packed_datagrams(log, 1400);
    let (mut ncu, mut ncu16, mut nc, mut floor) = (vec![], vec![], vec![], vec![]);
    let mut no_gso = vec![];
    // The senders' own time, start to exit: nc exits at EOF, ncu-send right after
    // END with --resend-buffer 0 (with recovery it lingers, which is not sending).
    let (mut ncu_exit, mut nc_exit) = (vec![], vec![]);
    let (mut ncu_got, mut nc_got) = (Vec::new(), Vec::new());
    for _ in 0..opts.runs {
        let sink = Sink::drained(Count::NcuLines);
        ncu.push(time_ncu(&opts.ncu, &[sink.addr().to_string()], file, &sink).as_secs_f64());
        ncu_got.push(sink.finish() as f64);

        let sink = Sink::drained(Count::Newlines);
        let start = Instant::now();
        nc_exit.push(time_run(Path::new(&opts.nc), &nc_args(sink.addr()), file).as_secs_f64());
        let last = sink.last_arrival();
        nc_got.push(sink.finish() as f64);
        nc.push(last.map_or(f64::NAN, |t| (t - start).as_secs_f64()));

        let sink = Sink::drained(Count::NcuLines);
        let args = [
            "--resend-buffer".to_owned(),
            "0".to_owned(),
            sink.addr().to_string(),
        ];
        ncu_exit.push(time_run(&opts.ncu, &args, file).as_secs_f64());
        sink.finish();

        // The same drained sink for both, as above.
        let sink = Sink::drained(Count::NcuLines);
        let args = [
            "--max-datagram".to_owned(),
            "16384".to_owned(),
            sink.addr().to_string(),
        ];
        ncu16.push(time_ncu(&opts.ncu, &args, file, &sink).as_secs_f64());
        sink.finish();
        let sink = Sink::drained(Count::NcuLines);
        let args = ["--no-gso".to_owned(), sink.addr().to_string()];
        no_gso.push(time_ncu(&opts.ncu, &args, file, &sink).as_secs_f64());
        sink.finish();
        let sink = Sink::drained(Count::NcuLines);
        floor.push(sendmmsg_loop(&datagrams, sink.addr()).as_secs_f64());
        sink.finish();
    }
    let (ncu, ncu16, nc, floor) = (median(ncu), median(ncu16), median(nc), median(floor));
    let no_gso = median(no_gso);
    let (ncu_exit, nc_exit) = (median(ncu_exit), median(nc_exit));
    let pct = |v: Vec<f64>| 100.0 * median(v) / LOG_LINES as f64;
    println!("    until the sink has every line:");
    println!(
        "    ncu-send (1400-byte datagrams, {} of them) {:>7.1} ms   lines delivered {:>5.1}%",
        datagrams.len(),
        ncu * 1e3,
        pct(ncu_got)
    );
    println!(
        "    nc -u (16 KiB datagrams)                   {:>7.1} ms   lines delivered {:>5.1}% \
         (newlines; lines split at datagram edges)",
        nc * 1e3,
        pct(nc_got)
    );
    println!(
        "    ncu-send --max-datagram 16384              {:>7.1} ms",
        ncu16 * 1e3
    );
    println!(
        "    ncu-send --no-gso (one datagram per message) {:>5.1} ms",
        no_gso * 1e3
    );
    println!(
        "    sendmmsg of ncu's 1400-byte datagrams, no GSO, in-process {:>5.1} ms",
        floor * 1e3
    );
    println!(
        "    ratio ncu-send / nc -u time               {:>6.2}   (goal <= 2)",
        ncu / nc
    );
    println!("    the sender's own time, start to exit:");
    println!(
        "    ncu-send --resend-buffer 0 (exits after END) {:>5.1} ms",
        ncu_exit * 1e3
    );
    println!(
        "    nc -u -q 0 (exits at EOF)                  {:>7.1} ms",
        nc_exit * 1e3
    );
    println!(
        "    ratio ncu-send / nc -u time               {:>6.2}   (goal <= 2)",
        ncu_exit / nc_exit
    );
    println!(
        "    ratio ncu-send 16 KiB / nc -u time        {:>6.2}",
        ncu16 / nc
    );
    println!(
        "    ratio ncu-send / in-process sendmmsg      {:>6.2}",
        ncu / floor
    );
}

/// The datagrams ncu-send builds for `log` when it reads it 64 KiB at a time.
fn packed_datagrams(log: &[u8], max_datagram: usize) -> Vec<Vec<u8>> {
    let mut framer = Framer::new(1, "bench", max_datagram);
    // As ncu-send frames them for GSO: full datagrams padded to equal sizes.
    framer.set_pad_full(true);
    let mut outbox = Outbox::default();
    let mut out = Vec::new();
    let mut rest = log;
    while !rest.is_empty() {
        let mut cut = rest.len().min(64 * 1024);
        while cut < rest.len() && rest[cut - 1] != b'\n' {
            cut -= 1;
        }
        for line in lines(&rest[..cut]) {
            framer.push_line(0, line, 0, &mut outbox);
        }
        framer.flush(&mut outbox);
        out.extend(outbox.datagrams().map(<[u8]>::to_vec));
        outbox.clear();
        rest = &rest[cut..];
    }
    out
}

/// Sends `datagrams` on a connected socket with `sendmmsg`, 64 at a time.
fn sendmmsg_loop(datagrams: &[Vec<u8>], dest: SocketAddr) -> Duration {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("a socket");
    socket.connect(dest).expect("connect");
    let start = Instant::now();
    for batch in datagrams.chunks(64) {
        let mut iovs: Vec<libc::iovec> = batch
            .iter()
            .map(|d| libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            })
            .collect();
        // SAFETY: all-zero mmsghdrs are valid; each then points at one iovec.
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut sent = 0;
        while sent < msgs.len() {
            // SAFETY: the headers point at iovecs that point at live datagrams.
            let rc = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    msgs[sent..].as_mut_ptr(),
                    (msgs.len() - sent) as libc::c_uint,
                    0,
                )
            };
            sent += if rc > 0 { rc as usize } else { 1 };
        }
    }
    start.elapsed()
}

/// (c) per-line latency, one line every 10 ms, ncu-send and nc in alternating rounds:
/// once as the scheduler places the processes, once with the bench and the sender
/// on one CPU (where waking an idle CPU, very slow on some VMs, plays no part).
/// Then, on one CPU, one line every 1 ms: what is left of the difference when the
/// sender's code and data are still cached from the line before (not the issue's
/// figure; it shows how much of the 10 ms one is cold caches).
fn latency(opts: &Options) {
    let every = Duration::from_millis(10);
    latency_table(opts, every, "processes free to use every CPU");
    // SAFETY: cpu_set_t is plain old data; all zeroes is an empty set.
    let mut saved: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: this thread's mask into a buffer of its size.
    if unsafe { libc::sched_getaffinity(0, size, &mut saved) } != 0 {
        return;
    }
    // SAFETY: as above.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU 0 is within the set's size.
    unsafe { libc::CPU_SET(0, &mut one) };
    // SAFETY: this thread only; the senders it spawns inherit the mask.
    if unsafe { libc::sched_setaffinity(0, size, &one) } == 0 {
        latency_table(
            opts,
            every,
            "bench and sender pinned to CPU 0 (taskset -c 0)",
        );
        latency_table(
            opts,
            Duration::from_millis(1),
            "pinned to CPU 0; caches warm from the line before",
        );
        // SAFETY: restores the mask read above.
        unsafe { libc::sched_setaffinity(0, size, &saved) };
    }
}

fn latency_table(opts: &Options, every: Duration, placement: &str) {
    const ROUNDS: usize = 4;
    let per_round = (opts.latency_lines / ROUNDS).max(1);
    println!(
        "\n(c) latency: write into stdin -> datagram read, one line every {} ms, {} lines each; {placement}",
        every.as_millis(),
        per_round * ROUNDS
    );
    // ncu-send, then nc, then any --also builds of ncu-send.
    let mut senders: Vec<Option<&Path>> = vec![Some(&opts.ncu), None];
    senders.extend(opts.also.iter().map(|p| Some(p.as_path())));
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); senders.len()];
    // Alternating rounds, each sender going first in turn, so that drift in the
    // machine's load favours none.
    for round in 0..ROUNDS {
        for k in 0..senders.len() {
            let i = (k + round) % senders.len();
            samples[i].extend(latency_round(opts, senders[i], every, per_round));
        }
    }
    for s in &mut samples {
        s.sort_by(f64::total_cmp);
    }
    let (m_nc, p_nc) = (percentile(&samples[1], 0.5), percentile(&samples[1], 0.99));
    println!("                 median      p99      deciles 10..90%");
    let deciles = |v: &[f64]| {
        (1..10)
            .map(|d| format!("{:.0}", percentile(v, f64::from(d) / 10.0)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (i, (sender, s)) in senders.iter().zip(&samples).enumerate() {
        let name = match (i, sender) {
            (0, _) => "ncu-send".to_owned(),
            (_, None) => "nc -u".to_owned(),
            (_, Some(path)) => format!("also {}", path.display()),
        };
        println!(
            "    {name:<10} {:>7.1} us {:>7.1} us   {}",
            percentile(s, 0.5),
            percentile(s, 0.99),
            deciles(s)
        );
    }
    for (i, sender) in senders.iter().enumerate().filter(|(i, _)| *i != 1) {
        let name = if i == 0 {
            "ratio".to_owned()
        } else {
            format!(
                "ratio {}",
                sender
                    .map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            )
        };
        let s = &samples[i];
        println!(
            "    {name:<10} {:>7.2}    {:>7.2}      (to nc -u; goal <= 1, within noise)",
            percentile(s, 0.5) / m_nc,
            percentile(s, 0.99) / p_nc
        );
    }
}

/// One round of `count` lines through `sender` (a build of ncu-send, or nc when
/// `None`): the latency of each, in microseconds.
fn latency_round(opts: &Options, sender: Option<&Path>, every: Duration, count: usize) -> Vec<f64> {
    let sink = Sink::new();
    let addr = sink.addr();
    let ncu = sender.is_some();
    let mut cmd = if let Some(path) = sender {
        let mut c = Command::new(path);
        c.args(["--heartbeat", "0", &addr.to_string()]);
        c
    } else {
        let mut c = Command::new(&opts.nc);
        c.args(["-u", &addr.ip().to_string(), &addr.port().to_string()]);
        c
    };
    let mut child: Child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("the sender starts");
    let mut stdin = child.stdin.take().expect("piped");
    sink.socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("a timeout");
    let mut buf = vec![0u8; 65_536];
    if ncu {
        sink.socket.recv(&mut buf).expect("HELLO");
    }
    let mut samples = Vec::with_capacity(count);
    let line = format!("{}\n", "l".repeat(99));
    let mut tick = Instant::now();
    for _ in 0..count {
        tick += every;
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
        let start = Instant::now();
        stdin.write_all(line.as_bytes()).expect("write");
        match sink.socket.recv(&mut buf) {
            Ok(_) => samples.push(start.elapsed().as_secs_f64() * 1e6),
            Err(e) => eprintln!("    (a line was not received: {e})"),
        }
    }
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    samples
}

/// (d) peak RSS while streaming `rss_bytes` of log through ncu-send.
fn rss(opts: &Options, log: &[u8]) {
    println!(
        "\n(d) memory: {:.1} GB of the log through ncu-send (packed) on a pipe",
        opts.rss_bytes as f64 / 1e9
    );
    let sink = Sink::new();
    let mut child = Command::new(&opts.ncu)
        .arg(sink.addr().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("ncu-send starts");
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("piped");
    let total = opts.rss_bytes;
    let written = Arc::new(AtomicU64::new(0));
    let progress = Arc::clone(&written);
    let log = log.to_vec();
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut left = total;
        while left > 0 {
            let n = left.min(log.len() as u64) as usize;
            stdin.write_all(&log[..n]).expect("write");
            left -= n as u64;
            progress.fetch_add(n as u64, Ordering::Relaxed);
        }
        stdin
    });
    let mut samples = Vec::new();
    let mut next_mark = total / 10;
    while !writer.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
        if written.load(Ordering::Relaxed) >= next_mark {
            if let Some(kib) = proc_status_kib(pid, "VmRSS:") {
                samples.push(kib);
            }
            next_mark += total / 10;
        }
    }
    let stdin = writer.join().expect("writer");
    // The high-water mark of ncu-send's own address space (reset at exec; wait4's
    // ru_maxrss would include this benchmark's memory, shared until the exec), read
    // while ncu-send still waits for input after the last byte.
    let peak = wait_until_read_all(&stdin).then(|| proc_status_kib(pid, "VmHWM:"));
    drop(stdin);
    let status = child.wait().expect("ncu-send exits");
    let took = start.elapsed().as_secs_f64();
    assert!(status.success(), "ncu-send: {status}");
    match peak.flatten() {
        Some(kib) => println!(
            "    peak RSS (VmHWM)  {:>6.1} MiB   ({:.0} MB/s)",
            kib as f64 / 1024.0,
            total as f64 / 1e6 / took
        ),
        None => println!("    peak RSS: not readable"),
    }
    if let (Some(lo), Some(hi)) = (samples.iter().min(), samples.iter().max()) {
        println!(
            "    RSS at every 10% of the input: {:.1} .. {:.1} MiB ({} samples)",
            *lo as f64 / 1024.0,
            *hi as f64 / 1024.0,
            samples.len()
        );
    }
}

/// Waits (up to 10 s) until the reader of `pipe` has read everything written to it.
fn wait_until_read_all(pipe: &impl AsRawFd) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int.
        if unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut n) } != 0 || n == 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn no_pack_args(extra: &[&str], dest: SocketAddr) -> Vec<String> {
    ["--no-pack", "--heartbeat", "0"]
        .iter()
        .chain(extra)
        .map(|s| (*s).to_owned())
        .chain([dest.to_string()])
        .collect()
}

/// (r) recovery with no loss: the default resend ring (4 MiB) against
/// `--resend-buffer 0`, alternating run by run on the same sinks; then peak RSS.
fn recovery_cost(opts: &Options, log: &[u8], file: &Path) {
    println!(
        "\n(r) recovery cost with no loss: default ring (4 MiB) vs --resend-buffer 0, \
         alternating, median of {} runs",
        opts.runs
    );
    let (mut packed_off, mut packed_on) = (Vec::new(), Vec::new());
    let (mut lines_off, mut lines_on) = (Vec::new(), Vec::new());
    // The 24 MB log is short next to the 4 MiB ring, whose first fill (page faults
    // of fresh buffers) is a one-time cost: also a 4x longer stream, steady state.
    let long = file.with_extension("x4");
    std::fs::write(&long, log.repeat(4)).expect("write the long log");
    let (mut long_off, mut long_on) = (Vec::new(), Vec::new());
    // CPU time (user + system) per workload: steadier than wall clock on a small
    // shared machine, and what the ring adds. [packed, 4x, --no-pack] x [off, on].
    let mut cpu: [[Vec<f64>; 2]; 3] = Default::default();
    for run in 0..opts.runs {
        // Alternate which goes first, so that neither always runs on a warm cache.
        let order: [bool; 2] = if run % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for on in order {
            let extra: &[&str] = if on { &[] } else { &["--resend-buffer", "0"] };
            let sink = Sink::drained(Count::NcuLines);
            let args: Vec<String> = extra
                .iter()
                .map(|s| (*s).to_owned())
                .chain([sink.addr().to_string()])
                .collect();
            let (t, c) = time_ncu_cpu(&opts.ncu, &args, file, &sink);
            let t = t.as_secs_f64();
            cpu[0][usize::from(on)].push(c);
            sink.finish();
            let sink = Sink::drained(Count::NcuLines);
            let long_args: Vec<String> = extra
                .iter()
                .map(|s| (*s).to_owned())
                .chain([sink.addr().to_string()])
                .collect();
            let (t_long, c) = time_ncu_cpu(&opts.ncu, &long_args, &long, &sink);
            let t_long = t_long.as_secs_f64();
            cpu[1][usize::from(on)].push(c);
            sink.finish();
            if on {
                long_on.push(t_long);
            } else {
                long_off.push(t_long);
            }
            let sink = Sink::drained(Count::NcuLines);
            let args = no_pack_args(extra, sink.addr());
            let (t_lines, c) = time_ncu_cpu(&opts.ncu, &args, file, &sink);
            let lps = LOG_LINES as f64 / t_lines.as_secs_f64();
            cpu[2][usize::from(on)].push(c);
            sink.finish();
            if on {
                packed_on.push(t);
                lines_on.push(lps);
            } else {
                packed_off.push(t);
                lines_off.push(lps);
            }
        }
    }
    let (p_off, p_on) = (median(packed_off), median(packed_on));
    let (l_off, l_on) = (median(lines_off), median(lines_on));
    println!(
        "    packed log, --resend-buffer 0     {:>7.1} ms ({:.0} MB/s)",
        p_off * 1e3,
        log.len() as f64 / 1e6 / p_off
    );
    println!(
        "    packed log, default ring           {:>7.1} ms ({:.0} MB/s)",
        p_on * 1e3,
        log.len() as f64 / 1e6 / p_on
    );
    println!(
        "    throughput ratio on / off          {:>7.3}   (cost {:+.1}%, goal < 5%)",
        p_off / p_on,
        100.0 * (1.0 - p_off / p_on)
    );
    let (g_off, g_on) = (median(long_off), median(long_on));
    println!(
        "    packed 4x log (97 MB), off / on    {:>7.1} / {:.1} ms",
        g_off * 1e3,
        g_on * 1e3
    );
    println!(
        "    throughput ratio on / off          {:>7.3}   (cost {:+.1}%, goal < 5%)",
        g_off / g_on,
        100.0 * (1.0 - g_off / g_on)
    );
    let _ = std::fs::remove_file(&long);
    println!(
        "    --no-pack, --resend-buffer 0      {:>9.0} lines/s",
        l_off
    );
    println!(
        "    --no-pack, default ring           {:>9.0} lines/s",
        l_on
    );
    println!(
        "    throughput ratio on / off          {:>7.3}   (cost {:+.1}%, goal < 5%)",
        l_on / l_off,
        100.0 * (1.0 - l_on / l_off)
    );
    println!("    CPU time (user + system) per workload, off / on, medians:");
    for (name, [off, on]) in ["packed log", "packed 4x log", "--no-pack"].iter().zip(cpu) {
        let (off, on) = (median(off), median(on));
        println!(
            "    {name:<15} {:>7.1} / {:>7.1} ms   throughput ratio on / off {:>6.3} (cost {:+.1}%, goal < 5%)",
            off * 1e3,
            on * 1e3,
            off / on,
            100.0 * (1.0 - off / on)
        );
    }
    for extra in [&[][..], &["--resend-buffer", "0"][..]] {
        let sink = Sink::drained(Count::NcuLines);
        let mut child = Command::new(&opts.ncu)
            .args(extra)
            .arg(sink.addr().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("ncu-send starts");
        let pid = child.id();
        let mut stdin = child.stdin.take().expect("piped");
        // The whole log (24 MB, far more than the ring) twice.
        let data = log.to_vec();
        let writer = std::thread::spawn(move || {
            for _ in 0..2 {
                stdin.write_all(&data).expect("write");
            }
            stdin
        });
        let stdin = writer.join().expect("writer");
        let peak = wait_until_read_all(&stdin).then(|| proc_status_kib(pid, "VmHWM:"));
        drop(stdin);
        let status = child.wait().expect("ncu-send exits");
        sink.finish();
        assert!(status.success(), "ncu-send: {status}");
        let label = if extra.is_empty() {
            "default ring (4 MiB)"
        } else {
            "--resend-buffer 0   "
        };
        match peak.flatten() {
            Some(kib) => println!(
                "    peak RSS (VmHWM), {label}  {:>6.1} MiB",
                kib as f64 / 1024.0
            ),
            None => println!("    peak RSS: not readable"),
        }
    }
}
