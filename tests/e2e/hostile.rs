//! Hostile senders against a real ncu-recv: names that try to forge ncu's own words,
//! log lines that try to drive the operator's terminal, and a flood of forged,
//! never-finished long lines against the memory budget.

use std::fs::File;
use std::io::Read;
use std::net::UdpSocket;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ncu_proto::wire::{self, Header, Payload, Repr};
use ncu_tests::{bin_path, spawn_send, wait_until, wall_us, Crafter, RecvProcess};

const T: Duration = Duration::from_secs(20);

/// The name of the issue: sets the terminal's title, then starts a line that reads
/// like a marker of ncu-recv's own, then a Markdown heading.
const EVIL: &str = "evil\x1b]0;pwned\x07\nfake ### ncu: end\n## Injected — session 1";

#[test]
fn a_hostile_name_forges_no_marker_and_no_report_heading() {
    let dir = std::env::temp_dir().join(format!("ncu-hostile-name-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    let report = dir.join("r.md");
    let rx = RecvProcess::spawn(&[
        "--dead-after",
        "1s",
        "--report",
        report.to_str().expect("UTF-8 path"),
    ]);
    let (mut send, mut stdin) = spawn_send(&["--name", EVIL, &rx.addr.to_string()]);
    std::io::Write::write_all(&mut stdin, b"hello\n").expect("write to ncu-send");
    let mut out: Vec<Vec<u8>> = Vec::new();
    assert!(
        wait_until(T, || {
            while let Some(line) = rx.next_line(Duration::from_millis(50)) {
                out.push(line);
            }
            out.iter().any(|l| l == b"hello\n")
        }),
        "the line arrives: {out:?}"
    );
    send.kill().expect("SIGKILL ncu-send");
    let _ = send.wait();
    assert!(
        wait_until(T, || {
            while let Some(line) = rx.next_line(Duration::from_millis(50)) {
                out.push(line);
            }
            out.iter().any(|l| l.starts_with(b"### ncu: silent "))
        }),
        "the sender is reported silent: {out:?}"
    );
    for line in &out {
        let text = String::from_utf8_lossy(line);
        assert!(
            !line[..line.len() - 1].iter().any(u8::is_ascii_control),
            "a control byte in {text:?}"
        );
        assert!(
            line.starts_with(b"### ncu: ") || line == b"hello\n",
            "a line ncu-recv did not mean to write: {text:?}"
        );
    }
    let silent = out
        .iter()
        .find(|l| l.starts_with(b"### ncu: silent "))
        .expect("seen above");
    assert!(
        String::from_utf8_lossy(silent)
            .contains("sender=evil\\x1b]0;pwned\\x07\\x0afake ### ncu: end\\x0a## Injected"),
        "{}",
        String::from_utf8_lossy(silent)
    );
    rx.signal(libc::SIGTERM);
    let mut rx = rx;
    assert!(rx.wait(T).success());
    let md = std::fs::read_to_string(&report).expect("the report was written");
    let headings: Vec<&str> = md.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(
        headings.len(),
        4,
        "ncu's own headings only (title, Sessions, one session, counters): {headings:#?}"
    );
    assert!(
        headings[2].starts_with(
            "### evil\\x1b\\]0;pwned\\x07\\x0afake \\#\\#\\# ncu: end\\x0a\\#\\# Injected"
        ),
        "{headings:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pseudo-terminal pair: (master, slave).
fn openpty() -> (File, OwnedFd) {
    // SAFETY: plain libc calls on descriptors this function owns; each result is
    // checked before use.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(master >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(master), 0, "grantpt");
        assert_eq!(libc::unlockpt(master), 0, "unlockpt");
        let name = libc::ptsname(master);
        assert!(!name.is_null(), "ptsname");
        let slave = libc::open(name, libc::O_RDWR | libc::O_NOCTTY);
        assert!(slave >= 0, "open the slave");
        (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave))
    }
}

/// Runs ncu-recv with ARGS with standard output on a terminal; returns what the
/// terminal showed once `want` appeared in it.
fn on_a_terminal(args: &[&str], line: &[u8], want: &[u8]) -> Vec<u8> {
    let (mut master, slave) = openpty();
    let mut command = Command::new(bin_path("ncu-recv"));
    command
        .args(args)
        .arg("127.0.0.1:0")
        .stdout(Stdio::from(slave));
    let rx = RecvProcess::spawn_command(command);
    let (tx, shown) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut c = Crafter::new("tty", rx.addr);
    let d = c.hello();
    c.send(&d);
    for d in c.line(line) {
        c.send(&d);
    }
    let mut seen = Vec::new();
    let found = wait_until(T, || {
        while let Ok(chunk) = shown.recv_timeout(Duration::from_millis(50)) {
            seen.extend_from_slice(&chunk);
        }
        seen.windows(want.len()).any(|w| w == want)
    });
    let mut rx = rx;
    rx.signal(libc::SIGTERM);
    let _ = rx.wait(T);
    assert!(
        found,
        "{want:?} not in {:?}",
        String::from_utf8_lossy(&seen)
    );
    seen
}

#[test]
fn a_terminal_shows_control_bytes_escaped_and_a_pipe_gets_the_bytes() {
    let line = b"\x1b]0;pwned\x07\x1b[2Jred\tline";
    let shown = on_a_terminal(&[], line, b"\\x1b]0;pwned\\x07\\x1b[2Jred\tline");
    assert!(!shown.contains(&0x1b), "no ESC reaches the terminal");
    // --raw: the bytes as they came, on a terminal too.
    on_a_terminal(&["--raw"], line, line);
    // A pipe: byte for byte.
    let rx = RecvProcess::spawn(&[]);
    let mut c = Crafter::new("pipe", rx.addr);
    let d = c.hello();
    c.send(&d);
    for d in c.line(line) {
        c.send(&d);
    }
    let mut got = None;
    assert!(wait_until(T, || {
        while let Some(l) = rx.next_line(Duration::from_millis(50)) {
            if !l.starts_with(b"### ncu:") {
                got = Some(l);
            }
        }
        got.is_some()
    }));
    assert_eq!(got.expect("seen"), [&line[..], b"\n"].concat());
}

/// Peak resident memory of a process, KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM")
}

/// One FRAGMENT of line 1 of a forged session.
fn forged_piece(session: u64, offset: u32, total: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Repr {
        header: Header {
            session,
            seq: 1,
            sent_at_us: wall_us(),
            counter: offset,
        },
        payload: Payload::Fragment {
            offset,
            total,
            line_flags: 0,
            bytes,
        },
    }
    .emit(&mut out);
    out
}

/// 20,000 forged sessions from 127.0.0.2 (64 source ports), each four 1,300-byte
/// pieces of a line declared 1 MiB long (or, `nearly_complete`, a 16 KiB line filled
/// to one byte short), beside a good ncu stream from 127.0.0.1 and a quiet netconsole
/// host on 127.0.0.3. The flood goes in bursts, each followed by a good line that is
/// awaited, so the socket never overflows and every good line must arrive.
fn flood(nearly_complete: bool) {
    const MAX_HELD_MIB: u64 = 16;
    let rx = RecvProcess::spawn(&[
        "--json",
        "--no-nack",
        "--dead-after",
        "3s",
        "--max-held",
        &format!("{MAX_HELD_MIB}MiB"),
    ]);
    let pid = rx.child.id();
    let baseline = vm_hwm_kib(pid);
    let quiet = UdpSocket::bind("127.0.0.3:0").expect("bind 127.0.0.3");
    quiet
        .send_to(b"6,100,5000000,-;last words of the quiet host\n", rx.addr)
        .expect("send");
    let evil: Vec<UdpSocket> = (0..64)
        .map(|_| UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2"))
        .collect();
    let mut good = Crafter::new("good", rx.addr);
    let d = good.hello();
    good.send(&d);
    let total: u32 = if nearly_complete { 16 * 1024 } else { 1 << 20 };
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut sent = 0;
    // Events of the good stream and the quiet host, seen while waiting for others.
    let mut seen: Vec<serde_json::Value> = Vec::new();
    let quiet = |a: &str| a.starts_with("127.0.0.3:");
    let keep = |seen: &mut Vec<serde_json::Value>, events: Vec<serde_json::Value>| {
        seen.extend(events.into_iter().filter(|v| {
            v["addr"]
                .as_str()
                .is_some_and(|a| !a.starts_with("127.0.0.2:"))
        }));
    };
    for burst in 0..40u64 {
        for i in 0..500u64 {
            let session = wire::session_id((wall_us() / 1_000_000) as u32, next() as u32);
            let socket = &evil[((burst * 500 + i) % 64) as usize];
            let pieces: Vec<(u32, usize)> = if nearly_complete {
                (0..total - 1)
                    .step_by(1300)
                    .map(|o| (o, 1300.min(total - 1 - o) as usize))
                    .collect()
            } else {
                (0..4)
                    .map(|_| ((next() % u64::from(total - 1300)) as u32, 1300))
                    .collect()
            };
            for (offset, len) in pieces {
                let d = forged_piece(session, offset, total, &vec![b'x'; len]);
                socket.send_to(&d, rx.addr).expect("send");
            }
        }
        sent += 1;
        let text = format!("good line {sent}");
        for d in good.line(text.as_bytes()) {
            good.send(&d);
        }
        let (before, line) = rx.wait_json(T, |v| {
            v["event"] == "line" && v["sender"] == "good" && v["text"] == text.as_str()
        });
        keep(&mut seen, before);
        keep(&mut seen, vec![line]);
    }
    let d = good.end();
    good.send(&d);
    let (before, end) = rx.wait_json(T, |v| v["event"] == "end" && v["sender"] == "good");
    keep(&mut seen, before);
    assert_eq!(
        (end["lines"].as_u64(), end["lost"].as_u64()),
        (Some(sent), Some(0))
    );
    assert!(
        !seen
            .iter()
            .any(|v| v["sender"] == "good" && v["event"] == "gap"),
        "the good stream lost nothing"
    );
    // The quiet host goes silent --dead-after its one record: during the flood, or
    // after it.
    let quiet_silent =
        |v: &serde_json::Value| v["event"] == "silent" && v["addr"].as_str().is_some_and(quiet);
    let silent = match seen.iter().find(|v| quiet_silent(v)) {
        Some(v) => v.clone(),
        None => rx.wait_json(T, quiet_silent).1,
    };
    assert_eq!(silent["last_text"], "last words of the quiet host");
    let peak = vm_hwm_kib(pid);
    let (events, status) = rx.stop_json();
    assert!(status.success());
    let summary = events
        .iter()
        .find(|v| v["event"] == "summary")
        .expect("a summary");
    assert!(
        summary["held_limit_reached"].as_u64() > Some(0),
        "{summary}"
    );
    // The budget plus a constant: what is bounded apart from it (the summaries of
    // 10,000 finished sessions, the report's ledger of their gaps, standard output's
    // 4 MiB of held events, the receive ring's 16 MiB of datagrams taken off the
    // socket and not yet handled, receiver/src/intake.rs) and the allocator's slack.
    const SLACK_KIB: u64 = (24 + 16) * 1024;
    println!(
        "flood (nearly complete: {nearly_complete}): VmHWM {baseline} KiB at start, {peak} KiB peak; \
         budget {MAX_HELD_MIB} MiB; budget full {} times; retired {}",
        summary["held_limit_reached"], summary["retired"]
    );
    assert!(
        peak <= baseline + MAX_HELD_MIB * 1024 + SLACK_KIB,
        "peak RSS {peak} KiB > {baseline} + {MAX_HELD_MIB} MiB + {SLACK_KIB} KiB"
    );
}

#[test]
fn a_flood_of_forged_long_lines_stays_within_the_budget() {
    flood(false);
}

#[test]
fn a_flood_of_forged_lines_one_byte_short_stays_within_the_budget() {
    flood(true);
}
