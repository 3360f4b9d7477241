//! Fault lab (issue 6, host-side): real ncu-send and ncu-recv on loopback under
//! killed senders, restarted receivers, garbage floods and a missing destination.
//! Every test states its ground truth (what the test itself wrote) and checks the
//! receiver's JSON events against it exactly.

use std::io::Write;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use ncu_tests::{bin_path, pipe_unread, process_state, wait_until, Crafter, RecvProcess};

/// Upper bound for anything to arrive; never a fixed sleep.
const T: Duration = Duration::from_secs(10);

/// The `i`-th line the producer writes (1-based): `line 000001`, ...
fn numbered(i: u64) -> String {
    format!("line {i:06}")
}

/// Starts `ncu-send ARGS... DEST` with its stdin a pipe the test writes to.
fn spawn_send(args: &[&str], dest: &str) -> Child {
    Command::new(bin_path("ncu-send"))
        .args(args)
        .arg(dest)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ncu-send starts")
}

/// Writes lines `first..=last` at `per_sec` lines a second (paced against a schedule,
/// not by fixed sleeps between writes), each flushed on its own.
fn write_paced(stdin: &mut ChildStdin, first: u64, last: u64, per_sec: u64) {
    let t0 = Instant::now();
    for i in first..=last {
        let due = t0 + Duration::from_micros((i - first) * 1_000_000 / per_sec);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        writeln!(stdin, "{}", numbered(i)).expect("write to ncu-send");
        stdin.flush().expect("flush");
    }
}

/// A port that was free a moment ago (bound, read, released).
fn free_port() -> u16 {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    s.local_addr().unwrap().port()
}

/// The `line` events of `sender`, as (seq, text).
fn lines_of(events: &[Value], sender: &str) -> Vec<(u64, String)> {
    lines_where(events, "sender", sender)
}

/// The `line` events whose `key` is `value`, as (seq, text).
fn lines_where(events: &[Value], key: &str, value: &str) -> Vec<(u64, String)> {
    events
        .iter()
        .filter(|v| v["event"] == "line" && v[key] == value)
        .map(|v| {
            (
                v["seq"].as_u64().expect("seq"),
                v["text"].as_str().expect("text").to_owned(),
            )
        })
        .collect()
}

fn count_event(events: &[Value], event: &str) -> usize {
    events.iter().filter(|v| v["event"] == event).count()
}

/// Asserts `got` is exactly lines `first..=last` in order, with their texts.
fn assert_exact_lines(got: &[(u64, String)], first: u64, last: u64) {
    let want: Vec<(u64, String)> = (first..=last).map(|i| (i, numbered(i))).collect();
    assert_eq!(got.len(), want.len(), "line count");
    if let Some(k) = got.iter().zip(&want).position(|(g, w)| g != w) {
        panic!("line {k}: got {:?}, want {:?}", got[k], want[k]);
    }
}

/// A producer writes `n` lines (at `per_sec`, or at full speed when `None`), waits
/// until the receiver reported the last one (so ncu-send has read and sent every line
/// written), then SIGKILLs ncu-send. Ground truth: exactly `n` lines, all delivered,
/// in order, no gap, then `silent` naming line `n`.
fn killed_sender(n: u64, per_sec: Option<u64>, send_args: &[&str]) {
    let started = Instant::now();
    let rx = RecvProcess::spawn(&["--json", "--dead-after", "1s"]);
    let mut args = vec!["--name", "victim"];
    args.extend_from_slice(send_args);
    let mut tx = spawn_send(&args, &rx.addr.to_string());
    let mut stdin = tx.stdin.take().unwrap();
    match per_sec {
        Some(rate) => write_paced(&mut stdin, 1, n, rate),
        None => {
            let mut buf = String::with_capacity(n as usize * 12);
            for i in 1..=n {
                buf.push_str(&numbered(i));
                buf.push('\n');
            }
            stdin.write_all(buf.as_bytes()).expect("write");
            stdin.flush().expect("flush");
        }
    }
    // Every written line has been read and sent once the receiver reports the last.
    let (mut events, last) =
        rx.wait_json(T, |v| v["event"] == "line" && v["seq"].as_u64() == Some(n));
    events.push(last);
    tx.kill().expect("SIGKILL ncu-send");
    let _ = tx.wait();
    drop(stdin);
    let (more, silent) = rx.wait_event(T, "silent");
    events.extend(more);

    assert_exact_lines(&lines_of(&events, "victim"), 1, n);
    assert_eq!(count_event(&events, "gap"), 0, "no gap: {events:?}");
    assert_eq!(count_event(&events, "end"), 0);
    assert_eq!(silent["sender"], "victim");
    assert_eq!(silent["last_seq"], n);
    assert_eq!(silent["last_text"], numbered(n));
    let (rest, status) = rx.stop_json();
    assert!(status.success());
    assert_eq!(count_event(&rest, "gap"), 0, "{rest:?}");
    eprintln!("{n} lines, killed sender: {:?}", started.elapsed());
}

/// ~1 s of lines at 200/s, then SIGKILL.
#[test]
fn fault_killed_sender_at_200_lines_per_second() {
    killed_sender(200, Some(200), &[]);
}

/// 50,000 lines written at full speed, then SIGKILL.
#[test]
fn fault_killed_sender_at_200_lines_per_second_bulk() {
    killed_sender(50_000, None, &[]);
}

/// Same without heartbeats: `silent` must still come from the dead-after clock.
#[test]
fn fault_killed_sender_at_200_lines_per_second_heartbeats_off() {
    killed_sender(200, Some(200), &["--heartbeat", "0"]);
}

/// Closing stdin gives `end` (lines == N, lost 0) and never `silent`: nothing else
/// arrives within dead-after (1 s) + 0.5 s, and the exit summary calls it ended.
#[test]
fn fault_clean_eof_gives_end_never_silent() {
    let n = 300;
    let rx = RecvProcess::spawn(&["--json", "--dead-after", "1s"]);
    let mut tx = spawn_send(&["--name", "clean"], &rx.addr.to_string());
    let mut stdin = tx.stdin.take().unwrap();
    write_paced(&mut stdin, 1, n, 1000);
    drop(stdin);
    let (events, end) = rx.wait_event(T, "end");
    assert!(tx.wait().unwrap().success());
    assert_exact_lines(&lines_of(&events, "clean"), 1, n);
    assert_eq!(count_event(&events, "gap"), 0);
    assert_eq!(end["lines"], n);
    assert_eq!(end["last_seq"], n);
    assert_eq!(end["lost"], 0);
    // Await a `silent` that must not come: a read with a deadline past dead-after.
    let late = rx.next_json(Duration::from_millis(1500));
    assert!(late.is_none(), "nothing after end, got {late:?}");
    let (rest, status) = rx.stop_json();
    assert!(status.success());
    assert_eq!(count_event(&rest, "silent"), 0, "{rest:?}");
    let summary = rest.last().expect("a summary");
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["sessions"][0]["fate"], "ended");
    assert_eq!(summary["sessions"][0]["lost"], 0);
}

/// Spawns a thread writing numbered lines at `per_sec` until `stop`, then closing
/// stdin; `written` counts lines written and flushed. Returns the total.
fn producer(
    mut stdin: ChildStdin,
    per_sec: u64,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let due = t0 + Duration::from_micros(i * 1_000_000 / per_sec);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            i += 1;
            writeln!(stdin, "{}", numbered(i)).expect("write to ncu-send");
            stdin.flush().expect("flush");
            written.store(i, Ordering::Relaxed);
        }
        i
    })
}

/// Receiver A is SIGKILLed mid-stream and receiver B starts on the same port while
/// ncu-send keeps going. Ground truth on B: it joined mid-way (`joined: true`,
/// `first_seq` > 1) and every line from first_seq to END's count is accounted for:
/// delivered in order with the right text, or inside a reported gap, never both.
#[test]
fn fault_receiver_restart_mid_stream() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let a = RecvProcess::spawn_on(&["--json"], &listen);
    let t0 = Instant::now();
    let mut tx = spawn_send(&["--name", "restart"], &listen);
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = producer(tx.stdin.take().unwrap(), 500, stop.clone(), written.clone());
    // A sees the stream, then dies mid-stream.
    a.wait_json(T, |v| {
        v["event"] == "line" && v["seq"].as_u64() >= Some(200)
    });
    drop(a); // SIGKILL and reap: the port is free again
    let killed_at = written.load(Ordering::Relaxed);
    // The session must be > 2 s older than B's uptime for B to call it joined.
    let b_start = t0 + Duration::from_millis(3200);
    if let Some(wait) = b_start.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let b = RecvProcess::spawn_on(&["--json"], &listen);
    let b_up = Instant::now();
    let (_, start) = b.wait_event(T, "start");
    // B never saw the HELLO: the session is known by its id, not its name.
    let session = start["session"].as_str().expect("session").to_owned();
    assert_eq!(start["joined"], true, "{start}");
    let first_seq = start["first_seq"].as_u64().expect("first_seq");
    assert!(first_seq > killed_at, "{first_seq} after {killed_at}");
    // ~1 s more under B, then EOF.
    wait_until(T, || b_up.elapsed() >= Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let total = writer.join().unwrap();
    let (events, end) = b.wait_event(T, "end");
    assert!(tx.wait().unwrap().success());
    assert_eq!(end["lines"], total);
    assert_eq!(end["session"], session.as_str());
    let lines = lines_where(&events, "session", &session);
    for w in lines.windows(2) {
        assert!(w[0].0 < w[1].0, "in order: {w:?}");
    }
    for (seq, text) in &lines {
        assert_eq!(text, &numbered(*seq));
    }
    let mut covered: Vec<u64> = lines.iter().map(|l| l.0).collect();
    for g in events
        .iter()
        .filter(|v| v["event"] == "gap" && v["session"] == session.as_str())
    {
        let (f, l) = (g["first"].as_u64().unwrap(), g["last"].as_u64().unwrap());
        assert_eq!(g["count"], l - f + 1);
        covered.extend(f..=l);
    }
    covered.sort_unstable();
    let want: Vec<u64> = (first_seq..=total).collect();
    assert_eq!(covered, want, "delivered + gaps == first_seq..=END");
    assert_eq!(end["lost"], total + 1 - first_seq - lines.len() as u64);
    eprintln!(
        "restart: A killed after {killed_at}, B first_seq {first_seq}, END {total}, \
         {} delivered, {:?}",
        lines.len(),
        t0.elapsed()
    );
}

/// Tiny xorshift generator: reproducible garbage without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `VmHWM` (peak resident set) of `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}

/// 50,000 garbage datagrams (random bytes, truncated and bit-flipped copies of real
/// ncu datagrams of another session) beside a good 20,000-line stream. Ground truth:
/// the good stream arrives whole, the garbage is counted as corrupt, and memory
/// stays bounded.
#[test]
fn fault_garbage_beside_a_good_stream() {
    let n = 20_000u64;
    let rx = RecvProcess::spawn(&["--json"]);
    let dest = rx.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = Crafter::new("garbage", dest);
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            let mut real: Vec<Vec<u8>> = vec![c.hello()];
            for i in 0..64 {
                real.extend(c.line(format!("garbage line {i} {}", "x".repeat(i * 7)).as_bytes()));
            }
            real.push(c.heartbeat());
            let mut sent = 0u64;
            while sent < 50_000 {
                let mut d = real[rng.below(real.len())].clone();
                match sent % 3 {
                    0 => {
                        let len = rng.below(1400);
                        d = (0..len).map(|_| rng.next() as u8).collect();
                    }
                    1 => d.truncate(rng.below(d.len())),
                    _ => {
                        for _ in 0..=rng.below(3) {
                            let bit = rng.below(d.len() * 8);
                            d[bit / 8] ^= 1 << (bit % 8);
                        }
                    }
                }
                c.socket().send_to(&d, dest).expect("send garbage");
                sent += 1;
                // Let the receiver drain: bursts of 200, then yield.
                if sent.is_multiple_of(200) {
                    std::thread::yield_now();
                }
            }
            stop.store(true, Ordering::Relaxed);
            sent
        })
    };
    let t0 = Instant::now();
    let mut tx = spawn_send(&["--name", "good"], &dest.to_string());
    let mut stdin = tx.stdin.take().unwrap();
    // 20,000 lines over ~2 s, in chunks, so the flood is running alongside.
    for chunk in 0..100u64 {
        let mut buf = String::new();
        for i in chunk * 200 + 1..=chunk * 200 + 200 {
            buf.push_str(&numbered(i));
            buf.push('\n');
        }
        stdin.write_all(buf.as_bytes()).expect("write");
        stdin.flush().expect("flush");
        let due = t0 + Duration::from_millis((chunk + 1) * 20);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    drop(stdin);
    let sent = flood.join().unwrap();
    assert_eq!(sent, 50_000);
    let (events, end) = rx.wait_json(T, |v| v["event"] == "end" && v["sender"] == "good");
    assert!(tx.wait().unwrap().success());
    assert_exact_lines(&lines_of(&events, "good"), 1, n);
    assert!(!events
        .iter()
        .any(|v| v["event"] == "gap" && v["sender"] == "good"));
    assert_eq!(end["lines"], n);
    assert_eq!(end["lost"], 0);
    // The reassembler's bounds (sessions, holes, fragments) keep ncu-recv small:
    // 64 MiB is the bound for peak RSS under this flood.
    let peak = peak_rss_kib(rx.child.id());
    let (rest, status) = rx.stop_json();
    assert!(status.success());
    let summary = rest.last().expect("a summary");
    assert_eq!(summary["event"], "summary");
    let corrupt = summary["corrupt_total"].as_u64().unwrap();
    assert!(corrupt > 0, "{summary}");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    eprintln!(
        "garbage: {sent} sent, corrupt_total {corrupt} ({}), datagrams {}, sessions {}, \
         kernel drops {}, peak RSS {peak} KiB, {:?}",
        summary["corrupt"],
        summary["datagrams"],
        summary["sessions_seen"],
        summary["kernel_drops"],
        t0.elapsed()
    );
}

/// ncu-send starts with nobody on the port (ECONNREFUSED on loopback): it keeps
/// reading and stays alive. Once ncu-recv listens, every line written after that
/// arrives, in order, and ncu-send exits 0 at EOF. The lines written while nobody
/// listened are then recovered from the sender's resend ring (the receiver NACKs
/// them), or, with `--resend-buffer 0`, reported as one gap.
#[test]
fn fault_destination_gone_then_back() {
    destination_gone_then_back(true);
    destination_gone_then_back(false);
}

fn destination_gone_then_back(recovery: bool) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let args: &[&str] = if recovery {
        &["--name", "phoenix"]
    } else {
        &["--name", "phoenix", "--resend-buffer", "0"]
    };
    let mut tx = spawn_send(args, &listen);
    let mut stdin = tx.stdin.take().unwrap();
    let before = 100u64;
    write_paced(&mut stdin, 1, before, 200);
    // It keeps reading: the pipe drains (never fills), and it is alive.
    assert!(
        wait_until(T, || pipe_unread(&stdin) == 0),
        "ncu-send stopped reading its stdin"
    );
    assert!(tx.try_wait().unwrap().is_none(), "ncu-send exited");
    assert!(matches!(process_state(tx.id()), Some('R' | 'S' | 'D')));
    let rx = RecvProcess::spawn_on(&["--json"], &listen);
    let after = 200u64;
    write_paced(&mut stdin, before + 1, before + after, 500);
    drop(stdin);
    let (events, end) = rx.wait_event(T, "end");
    let status = tx.wait().unwrap();
    assert!(status.success(), "{status}");
    // It may never have seen the HELLO: the session is known by END's id.
    let session = end["session"].as_str().expect("session");
    let got: Vec<(u64, String)> = lines_where(&events, "session", session)
        .into_iter()
        .filter(|l| l.0 > before)
        .collect();
    assert_exact_lines(&got, before + 1, before + after);
    let early: Vec<(u64, String)> = lines_where(&events, "session", session)
        .into_iter()
        .filter(|l| l.0 <= before)
        .collect();
    if recovery {
        assert_exact_lines(&early, 1, before);
    } else {
        assert!(early.is_empty(), "lines nobody received were delivered");
        let gap = events
            .iter()
            .find(|e| e["event"] == "gap" && e["session"] == session)
            .expect("the lines sent to nobody are reported as a gap");
        assert_eq!(
            (gap["first"].as_u64(), gap["last"].as_u64()),
            (Some(1), Some(before))
        );
    }
    assert_eq!(end["lines"], before + after);
}
