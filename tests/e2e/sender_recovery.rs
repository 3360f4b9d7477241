//! ncu-send's side of recovery (issue 8): the test plays the receiver with a plain
//! UDP socket, NACKs chosen lines and checks what comes back (byte-identical
//! resends, GONE, the rate limit, who is answered), the linger after END, and a
//! lossy path end to end with the real ncu-recv. Loopback only.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ncu_proto::seal::{self, Keys};
use ncu_proto::wire::{self, Header, Kind, Payload, Repr, FLAG_RECOVERY, FLAG_SEALED};
use ncu_tests::{big_rcvbuf, bin_path, recv_from, spawn_send, wall_us, RecvProcess};
use serde_json::Value;

const T: Duration = Duration::from_secs(10);

/// The receiver, played by the test: one IPv4 loopback socket.
struct Rx {
    socket: UdpSocket,
    /// Where ncu-send sends from (learnt from its first datagram).
    sender: Option<SocketAddr>,
    keys: Option<Keys>,
}

/// One datagram from ncu-send: raw bytes and the opened (plain) form.
#[derive(Debug, Clone)]
struct Got {
    raw: Vec<u8>,
    plain: Vec<u8>,
}

impl Got {
    fn repr(&self) -> Repr<'_> {
        Repr::parse(&self.plain).expect("ncu-send's datagrams decode")
    }
    fn kind(&self) -> Kind {
        self.repr().kind()
    }
    /// The lines a DATA datagram carries (a fragment: its line).
    fn lines(&self) -> Vec<u64> {
        let repr = self.repr();
        match repr.payload {
            Payload::Lines { lines, .. } => (0..lines.count() as u64)
                .map(|i| repr.header.seq + i)
                .collect(),
            Payload::Fragment { .. } => vec![repr.header.seq],
            _ => Vec::new(),
        }
    }
}

impl Rx {
    fn new(keys: Option<Keys>) -> Rx {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a UDP socket");
        big_rcvbuf(&socket);
        Rx {
            socket,
            sender: None,
            keys,
        }
    }

    fn dest(&self) -> String {
        self.socket.local_addr().expect("bound").to_string()
    }

    /// The next datagram from ncu-send within `timeout`.
    fn recv(&mut self, timeout: Duration) -> Option<Got> {
        let (from, raw) = recv_from(&self.socket, timeout)?;
        if let Some(sender) = self.sender {
            assert_eq!(from, sender, "one sender only");
        }
        self.sender = Some(from);
        let plain = match &self.keys {
            Some(keys) => {
                let mut out = Vec::new();
                seal::open(keys, &raw, &mut out).expect("sealed datagrams open");
                out
            }
            None => raw.clone(),
        };
        Some(Got { raw, plain })
    }

    /// Datagrams until one of kind DATA carries line `last` (HELLO first).
    fn until_line(&mut self, last: u64) -> Vec<Got> {
        let mut all = Vec::new();
        loop {
            let got = self.recv(T).expect("ncu-send's datagrams");
            let done = got.lines().contains(&last);
            all.push(got);
            if done {
                return all;
            }
        }
    }

    /// Every datagram within `quiet` of the previous one.
    fn drain(&mut self, quiet: Duration) -> Vec<Got> {
        std::iter::from_fn(|| self.recv(quiet)).collect()
    }

    /// A NACK for `ranges` of `session` (sealed with the key, if any, unless
    /// `unsealed`), sent from this socket to ncu-send.
    fn nack(&self, session: u64, ranges: &[(u64, u32)]) {
        let d = nack(session, ranges, self.keys.as_ref());
        self.socket
            .send_to(&d, self.sender.expect("ncu-send's address"))
            .expect("send on loopback");
    }
}

/// A NACK datagram as ncu-recv builds one.
fn nack(session: u64, ranges: &[(u64, u32)], keys: Option<&Keys>) -> Vec<u8> {
    let mut counter = [0u8; 4];
    for (i, b) in wall_us().to_le_bytes()[..4].iter().enumerate() {
        counter[i] = *b ^ (std::process::id() as u8).wrapping_add(i as u8);
    }
    let header = Header {
        session,
        seq: 0,
        sent_at_us: wall_us(),
        counter: u32::from_le_bytes(counter),
    };
    let mut d = Vec::new();
    wire::write_header(&mut d, Kind::Nack, 0, 0, &header);
    wire::push_nack_ranges(&mut d, ranges);
    wire::finish_datagram(&mut d);
    match keys {
        Some(keys) => {
            let mut sealed = Vec::new();
            seal::seal(keys, &d, &mut sealed);
            sealed
        }
        None => d,
    }
}

fn spawn(args: &[&str], dest: &str) -> (Child, ChildStdin) {
    let all: Vec<&str> = ["--heartbeat", "0", "-v"]
        .into_iter()
        .chain(args.iter().copied())
        .chain([dest])
        .collect();
    spawn_send(&all)
}

/// Waits for ncu-send to exit (within `timeout`); returns its status and stderr.
fn finish(mut child: Child, timeout: Duration) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = io::Read::read_to_string(&mut e, &mut err);
            }
            return (status, err);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("ncu-send did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn lines_text(n: u64, width: usize) -> Vec<u8> {
    (1..=n)
        .flat_map(|i| format!("line {i:0width$}\n").into_bytes())
        .collect()
}

/// The DATA datagrams by the lines they carry.
fn by_line(all: &[Got]) -> BTreeMap<u64, Vec<u8>> {
    let mut map = BTreeMap::new();
    for g in all {
        for l in g.lines() {
            map.insert(l, g.raw.clone());
        }
    }
    map
}

fn session_of(all: &[Got]) -> u64 {
    all[0].repr().header.session
}

#[test]
fn sender_recovery_resends_nacked_lines_byte_identical() {
    for pack in [false, true] {
        let mut rx = Rx::new(None);
        let args: &[&str] = if pack { &[] } else { &["--no-pack"] };
        let (child, mut stdin) = spawn(args, &rx.dest());
        stdin.write_all(&lines_text(200, 1)).expect("write");
        let all = rx.until_line(200);
        assert_eq!(all[0].kind(), Kind::Hello);
        assert!(
            all.iter().all(|g| g.raw[5] & FLAG_RECOVERY != 0),
            "every datagram offers recovery"
        );
        let sent = by_line(&all);
        let session = session_of(&all);
        let asked: [(u64, u32); 3] = [(4, 1), (9, 2), (150, 1)];
        rx.nack(session, &asked);
        let wanted: BTreeSet<Vec<u8>> = [4, 9, 10, 150].iter().map(|l| sent[l].clone()).collect();
        let mut resent = Vec::new();
        while resent.len() < wanted.len() {
            resent.push(rx.recv(T).expect("the resends"));
        }
        if let Some(more) = rx.recv(Duration::from_millis(300)) {
            panic!(
                "nothing more (pack {pack}): {:?} {:?}, resent {:?}",
                more.kind(),
                more.lines(),
                resent.iter().map(Got::lines).collect::<Vec<_>>()
            );
        }
        let resent_raw: BTreeSet<Vec<u8>> = resent.iter().map(|g| g.raw.clone()).collect();
        assert_eq!(resent_raw.len(), resent.len(), "each datagram resent once");
        assert_eq!(resent_raw, wanted, "byte-identical to the originals");
        let carried: BTreeSet<u64> = resent.iter().flat_map(Got::lines).collect();
        if pack {
            assert!([4, 9, 10, 150].iter().all(|l| carried.contains(l)));
        } else {
            assert_eq!(carried, [4, 9, 10, 150].into(), "exactly the asked lines");
        }
        drop(stdin);
        let rest = rx.drain(Duration::from_millis(1500));
        assert!(rest.iter().all(|g| g.kind() == Kind::End), "{rest:?}");
        let (status, err) = finish(child, T);
        assert!(status.success(), "{err}");
        assert!(err.contains("recovery: 1 NACKs answered"), "{err}");
    }
}

#[test]
fn sender_recovery_lines_older_than_the_ring_get_gone() {
    let mut rx = Rx::new(None);
    let (child, mut stdin) = spawn(&["--no-pack", "--resend-buffer", "2KiB"], &rx.dest());
    stdin.write_all(&lines_text(300, 40)).expect("write");
    let all = rx.until_line(300);
    let sent = by_line(&all);
    let session = session_of(&all);
    rx.nack(session, &[(1, 5), (20, 3), (300, 1)]);
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(rx.recv(T).expect("an answer"));
    }
    assert!(rx.recv(Duration::from_millis(300)).is_none());
    let resent: Vec<&Got> = got.iter().filter(|g| g.kind() == Kind::Data).collect();
    assert_eq!(resent.len(), 1, "{got:?}");
    assert_eq!(resent[0].raw, sent[&300]);
    let gone: Vec<(u64, u64)> = got
        .iter()
        .filter_map(|g| match g.repr().payload {
            Payload::Gone { last } => Some((g.repr().header.seq, last)),
            _ => None,
        })
        .collect();
    assert_eq!(gone, [(1, 22)], "one GONE naming the lines no longer held");
    let gone_dg = got.iter().find(|g| g.kind() == Kind::Gone).unwrap();
    assert_eq!(gone_dg.repr().header.session, session);
    drop(stdin);
    let (status, _) = finish(child, T);
    assert!(status.success());
}

#[test]
fn sender_recovery_a_nack_flood_resends_at_most_the_rate_limit() {
    let mut rx = Rx::new(None);
    let rate = 50 * 1024u64;
    let (child, mut stdin) = spawn(&["--no-pack", "--resend-rate", "50KiB"], &rx.dest());
    stdin.write_all(&lines_text(3000, 90)).expect("write");
    let all = rx.until_line(3000);
    let session = session_of(&all);
    let flood = nack(session, &[(1, 3000)], None);
    let to = rx.sender.unwrap();
    let start = Instant::now();
    for _ in 0..1000 {
        rx.socket.send_to(&flood, to).expect("send");
    }
    let mut bytes = 0u64;
    let mut last = start;
    // Long enough for the bucket to refill a few times.
    while start.elapsed() < Duration::from_millis(1500) {
        let Some(g) = rx.recv(Duration::from_millis(200)) else {
            continue;
        };
        assert_eq!(g.kind(), Kind::Data);
        bytes += g.raw.len() as u64;
        last = Instant::now();
    }
    let elapsed = last.duration_since(start).as_secs_f64();
    // Burst: one second's worth (at least 64 KiB), then the rate.
    let bound = rate.max(65_536) as f64 + rate as f64 * elapsed;
    assert!(bytes > 0, "some resends");
    assert!(
        (bytes as f64) <= bound,
        "{bytes} bytes resent in {elapsed:.3}s, bound {bound}"
    );
    drop(stdin);
    let (status, err) = finish(child, T);
    assert!(status.success());
    assert!(err.contains("refused by the rate limit"), "{err}");
    assert!(!err.contains(" 0 refused by the rate limit"), "{err}");
}

#[test]
fn sender_recovery_ignores_other_sessions_and_other_sockets() {
    let mut rx = Rx::new(None);
    let (child, mut stdin) = spawn(&["--no-pack"], &rx.dest());
    stdin.write_all(&lines_text(10, 1)).expect("write");
    let all = rx.until_line(10);
    let session = session_of(&all);
    // Another session id.
    rx.nack(session ^ 1, &[(1, 10)]);
    // The right session, from another socket.
    let other = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a socket");
    other
        .send_to(&nack(session, &[(1, 10)], None), rx.sender.unwrap())
        .expect("send");
    // Not a NACK at all.
    rx.socket
        .send_to(b"hello there", rx.sender.unwrap())
        .expect("send");
    assert!(
        rx.recv(Duration::from_millis(500)).is_none(),
        "nothing resent"
    );
    assert!(
        recv_from(&other, Duration::from_millis(100)).is_none(),
        "nothing to the other socket"
    );
    // Still answering its own receiver.
    rx.nack(session, &[(3, 1)]);
    let g = rx.recv(T).expect("a resend");
    assert_eq!(g.lines(), [3]);
    drop(stdin);
    let (status, err) = finish(child, T);
    assert!(status.success());
    assert!(recv_from(&other, Duration::from_millis(50)).is_none());
    assert!(err.contains("1 NACKs answered, 2 dropped"), "{err}");
}

/// A fresh key file (removed on drop).
struct KeyFile(PathBuf);

impl KeyFile {
    fn new() -> KeyFile {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "ncu-sender-recovery-{}-{nanos}.key",
            std::process::id()
        ));
        let out = Command::new(bin_path("ncu-send"))
            .arg("--gen-key")
            .arg(&path)
            .output()
            .expect("ncu-send runs");
        assert!(out.status.success(), "{out:?}");
        KeyFile(path)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn sender_recovery_sealed_nacks_only() {
    let key = KeyFile::new();
    let keys = ncu_host::load_keys(key.path()).expect("a key");
    let mut rx = Rx::new(Some(keys.clone()));
    let key_arg = key.path().to_str().unwrap();
    let (child, mut stdin) = spawn(&["--no-pack", "--key-file", key_arg], &rx.dest());
    stdin.write_all(&lines_text(50, 1)).expect("write");
    let all = rx.until_line(50);
    assert!(all
        .iter()
        .all(|g| g.raw[5] & (FLAG_SEALED | FLAG_RECOVERY) == FLAG_SEALED | FLAG_RECOVERY));
    let sent = by_line(&all);
    let session = session_of(&all);
    // Unsealed: ignored.
    rx.socket
        .send_to(&nack(session, &[(7, 1)], None), rx.sender.unwrap())
        .expect("send");
    assert!(
        rx.recv(Duration::from_millis(400)).is_none(),
        "unsealed NACK ignored"
    );
    // Sealed with the key: answered with the sealed datagrams, byte for byte.
    rx.nack(session, &[(7, 1), (40, 2)]);
    let mut resent = BTreeSet::new();
    for _ in 0..3 {
        resent.insert(rx.recv(T).expect("a resend").raw);
    }
    let wanted: BTreeSet<Vec<u8>> = [7, 40, 41].iter().map(|l| sent[l].clone()).collect();
    assert_eq!(resent, wanted);
    assert!(rx.recv(Duration::from_millis(300)).is_none());
    drop(stdin);
    let (status, err) = finish(child, T);
    assert!(status.success());
    assert!(err.contains("1 NACKs answered, 1 dropped"), "{err}");
}

#[test]
fn sender_recovery_lingers_after_end_repeating_it() {
    // No NACK: END repeated every 50ms, exit after 500ms of quiet.
    let mut rx = Rx::new(None);
    let (child, mut stdin) = spawn(&[], &rx.dest());
    stdin.write_all(b"one\ntwo\n").expect("write");
    rx.until_line(2);
    drop(stdin);
    let first_end = rx.recv(T).expect("END");
    let ended = Instant::now();
    assert_eq!(first_end.kind(), Kind::End);
    let rest = rx.drain(Duration::from_millis(600));
    assert!(rest.len() >= 6, "END repeated: {}", rest.len());
    assert!(rest.iter().all(|g| g.raw == first_end.raw), "the same END");
    let (status, _) = finish(child, T);
    assert!(status.success());
    let took = ended.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");

    // NACKs keep it answering, but never beyond 3s.
    let mut rx = Rx::new(None);
    let (child, mut stdin) = spawn(&["--no-pack"], &rx.dest());
    stdin.write_all(b"one\ntwo\n").expect("write");
    let all = rx.until_line(2);
    let session = session_of(&all);
    drop(stdin);
    assert_eq!(rx.recv(T).expect("END").kind(), Kind::End);
    let ended = Instant::now();
    let mut resent = 0;
    let pid = child.id();
    let mut child = child;
    let mut exited = None;
    while ended.elapsed() < Duration::from_secs(6) {
        rx.nack(session, &[(2, 1)]);
        // Read for 150 ms (the repeated ENDs never leave a quiet gap), then NACK again.
        let next_nack = Instant::now() + Duration::from_millis(150);
        while let Some(g) = rx.recv(next_nack.saturating_duration_since(Instant::now())) {
            if g.kind() == Kind::Data {
                assert_eq!(g.lines(), [2]);
                resent += 1;
            }
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            exited = Some((status, ended.elapsed()));
            break;
        }
    }
    let (status, took) = exited.unwrap_or_else(|| panic!("ncu-send {pid} still lingers"));
    assert!(status.success());
    assert!(resent >= 5, "answered while lingering: {resent}");
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_millis(3800),
        "{took:?}"
    );
}

#[test]
fn sender_recovery_sigterm_ends_the_linger_at_once() {
    let mut rx = Rx::new(None);
    let (child, mut stdin) = spawn(&[], &rx.dest());
    stdin.write_all(b"one\n").expect("write");
    rx.until_line(1);
    drop(stdin);
    assert_eq!(rx.recv(T).expect("END").kind(), Kind::End);
    // SAFETY: kill with a live child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let start = Instant::now();
    let (status, _) = finish(child, T);
    assert!(start.elapsed() < Duration::from_millis(500));
    assert!(status.success(), "the END's status: {status:?}");
}

#[test]
fn sender_recovery_off_with_resend_buffer_0() {
    let mut rx = Rx::new(None);
    let (child, mut stdin) = spawn(&["--resend-buffer", "0", "--no-pack"], &rx.dest());
    stdin.write_all(&lines_text(10, 1)).expect("write");
    let all = rx.until_line(10);
    assert!(all.iter().all(|g| g.raw[5] & FLAG_RECOVERY == 0));
    rx.nack(session_of(&all), &[(1, 10)]);
    assert!(rx.recv(Duration::from_millis(400)).is_none(), "no resend");
    drop(stdin);
    let end = rx.recv(T).expect("END");
    let ended = Instant::now();
    assert_eq!(end.kind(), Kind::End);
    let (status, _) = finish(child, T);
    assert!(status.success());
    assert!(ended.elapsed() < Duration::from_millis(500), "no linger");
    assert!(rx.recv(Duration::from_millis(300)).is_none(), "END once");
}

/// ncu-send -> a shim dropping every 10th datagram on the way (NACKs pass back) ->
/// ncu-recv: every line arrives, none reported lost, some recovered.
#[test]
fn sender_recovery_lossy_path_end_to_end_with_ncu_recv() {
    let rx = RecvProcess::spawn(&["--json"]);
    let front = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a socket");
    let back = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a socket");
    back.connect(rx.addr).expect("connect");
    let front_addr = front.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sender_addr: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let dropped = Arc::new(AtomicU64::new(0));
    let nacks = Arc::new(AtomicU64::new(0));
    let forward = {
        let (front, back) = (front.try_clone().unwrap(), back.try_clone().unwrap());
        let (stop, sender_addr, dropped) = (stop.clone(), sender_addr.clone(), dropped.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Some((from, d)) = recv_from(&front, Duration::from_millis(50)) else {
                    continue;
                };
                *sender_addr.lock().unwrap() = Some(from);
                n += 1;
                if n.is_multiple_of(10) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let _ = back.send(&d);
            }
        })
    };
    let backward = {
        let (stop, sender_addr, nacks) = (stop.clone(), sender_addr.clone(), nacks.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Some((_, d)) = recv_from(&back, Duration::from_millis(50)) else {
                    continue;
                };
                if let Some(to) = *sender_addr.lock().unwrap() {
                    nacks.fetch_add(1, Ordering::Relaxed);
                    let _ = front.send_to(&d, to);
                }
            }
        })
    };
    let n = 500u64;
    let (child, mut stdin) = spawn(&["--no-pack"], &front_addr.to_string());
    let text: Vec<u8> = (1..=n)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    // In a few bursts, as a log arrives.
    for chunk in text.chunks(text.len() / 5 + 1) {
        stdin.write_all(chunk).expect("write");
        std::thread::sleep(Duration::from_millis(30));
    }
    drop(stdin);
    let (events, end) = rx.wait_event(T, "end");
    let (status, err) = finish(child, T);
    assert!(status.success(), "{err}");
    stop.store(true, Ordering::Relaxed);
    forward.join().unwrap();
    backward.join().unwrap();
    assert!(
        dropped.load(Ordering::Relaxed) >= n / 10,
        "the shim dropped"
    );
    assert!(nacks.load(Ordering::Relaxed) > 0, "NACKs came back");
    assert!(
        events.iter().all(|v| v["event"] != "gap"),
        "no gap: {events:?}"
    );
    let seqs: Vec<u64> = events
        .iter()
        .filter(|v| v["event"] == "line")
        .map(|v| {
            assert_eq!(v["text"], format!("line {}", v["seq"]));
            v["seq"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=n).collect::<Vec<_>>(),
        "every line, in order, once"
    );
    assert_eq!(end["lost"], 0, "{end}");
    let (rest, status) = rx.stop_json();
    assert!(status.success());
    let summary = rest.last().expect("a summary");
    let sessions = summary["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 1, "{summary}");
    let s: &Value = &sessions[0];
    assert!(s["recovered"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["lost"], 0, "{s}");
    assert_eq!(s["lines"], n, "{s}");
    assert!(err.contains("datagrams resent"), "{err}");
}
