//! ncu-recv end to end: real `ncu-recv` processes on loopback, fed by datagrams the
//! tests craft with `ncu_proto::framer` (dropping, repeating and reordering chosen
//! ones) and by real `ncu-send` processes. Output is read line by line with deadlines.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ncu_tests::{bin_path, Crafter, RecvProcess};
use serde_json::Value;

const T: Duration = Duration::from_secs(10);

fn lines_of(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|v| v["event"] == "line").collect()
}

fn is_rfc3339_micros(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    // 2024-05-01T12:00:00.123456Z
    s.len() == 27 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.as_bytes()[19] == b'.'
}

/// Lines come out in order and byte for byte; END says how many; the fields are the
/// contract's.
#[test]
fn recv_lines_in_order_unchanged_json() {
    let rx = RecvProcess::spawn(&["--json"]);
    let mut c = Crafter::new("web", rx.addr);
    let texts: Vec<Vec<u8>> = (1..=50)
        .map(|i| format!("line {i}\twith tab\r and \"quotes\" \\ é").into_bytes())
        .chain([vec![0xff, 0xfe, b'a'], Vec::new()])
        .collect();
    let hello = c.hello();
    c.send(&hello);
    for t in &texts {
        for d in c.line(t) {
            c.send(&d);
        }
    }
    let end = c.end();
    c.send(&end);
    let (before, end) = rx.wait_event(T, "end");
    assert_eq!(before[0]["event"], "start");
    assert_eq!(before[0]["first_seq"], 1);
    assert_eq!(before[0]["sender"], "web");
    assert_eq!(before[0]["session"], c.session_hex());
    let lines = lines_of(&before);
    assert_eq!(lines.len(), texts.len());
    for (i, (line, text)) in lines.iter().zip(&texts).enumerate() {
        assert_eq!(line["seq"], i as u64 + 1);
        assert_eq!(line["sender"], "web");
        assert_eq!(line["session"], c.session_hex());
        assert!(line["addr"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(is_rfc3339_micros(&line["sent_at"]), "{line}");
        assert!(is_rfc3339_micros(&line["received_at"]), "{line}");
        assert!(line.get("partial").is_none() && line.get("late").is_none());
        match std::str::from_utf8(text) {
            Ok(s) => assert_eq!(line["text"], s),
            Err(_) => {
                assert!(line.get("text").is_none());
                assert_eq!(line["bytes"], "//5h"); // base64 of ff fe 61
            }
        }
    }
    assert_eq!(end["lines"], texts.len() as u64);
    assert_eq!(end["last_seq"], texts.len() as u64);
    assert_eq!(end["lost"], 0);
    let (rest, status) = rx.stop_json();
    assert!(status.success());
    let summary = rest.last().expect("a summary");
    assert_eq!(summary["event"], "summary");
    let s = &summary["sessions"][0];
    assert_eq!(s["lines"], texts.len() as u64);
    assert_eq!(s["lost"], 0);
    assert_eq!(s["fate"], "ended");
    for key in [
        "duplicates",
        "reordered",
        "late",
        "sender",
        "session",
        "addr",
    ] {
        assert!(s.get(key).is_some(), "summary lacks {key}: {s}");
    }
}

/// Text output: each line byte for byte plus newline; events as `### ncu:` lines.
#[test]
fn recv_text_output_is_bytes_exactly() {
    let rx = RecvProcess::spawn(&[]);
    let mut c = Crafter::new("web", rx.addr);
    let texts: [&[u8]; 4] = [b"plain", b"\xff\x00binary\r", b"", b"### not an event"];
    let hello = c.hello();
    c.send(&hello);
    for t in texts {
        for d in c.line(t) {
            c.send(&d);
        }
    }
    let end = c.end();
    c.send(&end);
    let start = rx.next_line(T).unwrap();
    assert!(
        start.starts_with(b"### ncu: start sender=web session="),
        "{start:?}"
    );
    for t in texts {
        let mut want = t.to_vec();
        want.push(b'\n');
        assert_eq!(rx.next_line(T).unwrap(), want);
    }
    let end = String::from_utf8(rx.next_line(T).unwrap()).unwrap();
    assert!(end.starts_with("### ncu: end sender=web"), "{end}");
    assert!(end.contains("4 lines sent, 0 lost"), "{end}");
}

/// The shim drops chosen datagrams: the gaps name exactly those lines, at the point
/// in the stream where they were lost.
#[test]
fn recv_gap_reported_exactly_where_dropped() {
    let rx = RecvProcess::spawn(&["--json", "--reorder-window", "100ms"]);
    let mut c = Crafter::new("shim", rx.addr);
    let hello = c.hello();
    c.send(&hello);
    let dropped = [5u64, 6, 7, 12, 20];
    for i in 1..=20u64 {
        let d = c.line(format!("l{i}").as_bytes());
        if !dropped.contains(&i) {
            for d in d {
                c.send(&d);
            }
        }
    }
    let end = c.end();
    c.send(&end);
    let (before, end) = rx.wait_event(T, "end");
    let order: Vec<String> = before
        .iter()
        .filter_map(|v| match v["event"].as_str() {
            Some("line") => Some(format!("{}", v["seq"])),
            Some("gap") => Some(format!("gap {}-{} {}", v["first"], v["last"], v["count"])),
            _ => None,
        })
        .collect();
    let want = [
        "1",
        "2",
        "3",
        "4",
        "gap 5-7 3",
        "8",
        "9",
        "10",
        "11",
        "gap 12-12 1",
        "13",
        "14",
        "15",
        "16",
        "17",
        "18",
        "19",
        "gap 20-20 1",
    ];
    assert_eq!(order, want);
    for g in before.iter().filter(|v| v["event"] == "gap") {
        assert_eq!(g["kind"], "lost");
        assert_eq!(g["sender"], "shim");
    }
    assert_eq!(end["lost"], 5);
    assert_eq!(end["lines"], 20);
}

/// Every datagram twice and neighbours swapped: lines once each, in order, no gap.
#[test]
fn recv_duplicates_and_reordering_absorbed() {
    let rx = RecvProcess::spawn(&["--json"]);
    let mut c = Crafter::new("dup", rx.addr);
    let mut all = vec![c.hello()];
    for i in 1..=40 {
        all.extend(c.line(format!("x{i}").as_bytes()));
    }
    // Swap neighbours (after HELLO), then send every datagram twice.
    for pair in all[1..].chunks_mut(2) {
        pair.reverse();
    }
    for d in &all {
        c.send(d);
        c.send(d);
    }
    let end = c.end();
    c.send(&end);
    c.send(&end);
    let (before, end) = rx.wait_event(T, "end");
    let seqs: Vec<u64> = lines_of(&before)
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    assert!(before.iter().all(|v| v["event"] != "gap"), "{before:#?}");
    assert_eq!(end["lost"], 0);
    let (rest, _) = rx.stop_json();
    let s = &rest.last().unwrap()["sessions"][0];
    assert!(s["duplicates"].as_u64().unwrap() >= 40, "{s}");
    assert!(s["reordered"].as_u64().unwrap() >= 10, "{s}");
}

/// A sender that goes quiet: `silent` names its last line; text and JSON.
#[test]
fn recv_silent_names_last_line() {
    let rx = RecvProcess::spawn(&["--json", "--dead-after", "500ms"]);
    let mut c = Crafter::new("dying", rx.addr);
    let hello = c.hello();
    c.send(&hello);
    for i in 1..=3 {
        for d in c.line(format!("last words {i}").as_bytes()) {
            c.send(&d);
        }
    }
    let t0 = Instant::now();
    let (before, silent) = rx.wait_event(T, "silent");
    assert!(t0.elapsed() >= Duration::from_millis(400));
    assert_eq!(lines_of(&before).len(), 3);
    assert_eq!(silent["last_seq"], 3);
    assert_eq!(silent["last_text"], "last words 3");
    assert_eq!(silent["reason"], "dead_after");
    assert_eq!(silent["session"], c.session_hex());
    assert!(is_rfc3339_micros(&silent["last_sent_at"]));
    assert!(is_rfc3339_micros(&silent["last_received_at"]));
    // It comes back.
    for d in c.line(b"not dead yet") {
        c.send(&d);
    }
    let (_, resumed) = rx.wait_event(T, "resumed");
    assert_eq!(resumed["seq"], 4);
    let (_, line) = rx.wait_event(T, "line");
    assert_eq!(line["text"], "not dead yet");
}

/// A new session of the same sender name from the same IP: the old one is `silent`
/// with reason `restarted`, then the new one starts.
#[test]
fn recv_restart_gives_silent_restarted_then_start() {
    let rx = RecvProcess::spawn(&["--json"]);
    let mut a = Crafter::new("app", rx.addr);
    let hello = a.hello();
    a.send(&hello);
    for d in a.line(b"before crash") {
        a.send(&d);
    }
    rx.wait_event(T, "line");
    let mut b = Crafter::new("app", rx.addr);
    assert_ne!(a.session_hex(), b.session_hex());
    let hello = b.hello();
    b.send(&hello);
    for d in b.line(b"after restart") {
        b.send(&d);
    }
    let (_, silent) = rx.wait_event(T, "silent");
    assert_eq!(silent["session"], a.session_hex());
    assert_eq!(silent["reason"], "restarted");
    assert_eq!(silent["last_text"], "before crash");
    let (_, start) = rx.wait_json(T, |v| {
        v["event"] == "start" && v["session"] == b.session_hex()
    });
    assert_eq!(start["sender"], "app");
    let (_, line) = rx.wait_event(T, "line");
    assert_eq!(line["text"], "after restart");
}

/// Random bytes, truncated and bit-flipped ncu datagrams, and over-long datagrams
/// sent all along never disturb a concurrent good stream.
#[test]
fn recv_garbage_never_disturbs_a_good_stream() {
    let rx = RecvProcess::spawn(&["--json", "--slot-bytes", "1024"]);
    let addr = rx.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let garbage = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let mut g = Crafter::new("garbage", addr);
            let mut x: u64 = 0x2545_f491_4f6c_dd1d;
            let mut rnd = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let good = g.line(b"a line that will be damaged").remove(0);
                let n = (rnd() % 200) as usize;
                let random: Vec<u8> = (0..n).map(|_| rnd() as u8).collect();
                let mut truncated = good.clone();
                truncated.truncate((rnd() as usize) % good.len());
                let mut flipped = good.clone();
                let bit = (rnd() as usize) % (good.len() * 8);
                flipped[bit / 8] ^= 1 << (bit % 8);
                let mut magic_random = b"NCU\x01".to_vec();
                magic_random.extend_from_slice(&random);
                let too_large = vec![b'x'; 2000];
                for d in [&random, &truncated, &flipped, &magic_random, &too_large] {
                    let _ = sock.send_to(d, addr);
                    sent += 1;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            sent
        })
    };
    let mut c = Crafter::new("good", rx.addr);
    let hello = c.hello();
    c.send(&hello);
    let n = 2000u64;
    for i in 1..=n {
        for d in c.line(format!("good line {i}").as_bytes()) {
            c.send(&d);
        }
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let end = c.end();
    c.send(&end);
    let (before, end) = rx.wait_json(T, |v| v["event"] == "end" && v["sender"] == "good");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = garbage.join().unwrap();
    assert!(sent > 100, "the garbage thread sent {sent}");
    let good: Vec<&Value> = before
        .iter()
        .filter(|v| v["event"] == "line" && v["sender"] == "good")
        .collect();
    assert_eq!(good.len() as u64, n);
    for (i, v) in good.iter().enumerate() {
        assert_eq!(v["text"], format!("good line {}", i + 1));
    }
    assert!(!before
        .iter()
        .any(|v| v["event"] == "gap" && v["sender"] == "good"));
    assert_eq!(end["lost"], 0);
    let corrupt: Vec<&Value> = before.iter().filter(|v| v["event"] == "corrupt").collect();
    assert!(!corrupt.is_empty());
    let (rest, status) = rx.stop_json();
    assert!(status.success());
    let summary = rest.last().unwrap();
    let by_reason = &summary["corrupt"];
    assert!(
        by_reason["too_large"].as_u64().unwrap_or(0) > 0,
        "{summary}"
    );
    assert!(
        by_reason["bad_checksum"].as_u64().unwrap_or(0) > 0,
        "{summary}"
    );
    assert!(
        summary["corrupt_total"].as_u64().unwrap() > 100,
        "{summary}"
    );
}

/// `--report`: what a bug ticket needs, written on SIGTERM.
#[test]
fn recv_report_has_what_a_ticket_needs() {
    let dir = std::env::temp_dir().join(format!("ncu-recv-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("crash.md");
    let path_s = path.to_str().unwrap();
    let rx = RecvProcess::spawn(&[
        "--json",
        "--dead-after",
        "500ms",
        "--reorder-window",
        "100ms",
        "--report",
        path_s,
    ]);
    let mut c = Crafter::new("db-1", rx.addr);
    let hello = c.hello();
    c.send(&hello);
    for i in 1..=30u64 {
        let d = c.line(format!("query {i} ok").as_bytes());
        if !(10..=14).contains(&i) && i != 22 {
            for d in d {
                c.send(&d);
            }
        }
    }
    for d in c.line(b"PANIC: ```the end```") {
        c.send(&d);
    }
    let garbage = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    garbage.send_to(b"\x00\x01\x02binary", rx.addr).unwrap();
    let mut ok = Crafter::new("web", rx.addr);
    let hello = ok.hello();
    ok.send(&hello);
    for d in ok.line(b"fine") {
        ok.send(&d);
    }
    let end = ok.end();
    ok.send(&end);
    rx.wait_json(T, |v| v["event"] == "silent" && v["sender"] == "db-1");
    let (_, status) = rx.stop_json();
    assert!(status.success());
    let report = std::fs::read_to_string(&path).expect("the report was written");
    for want in [
        "# ncu gap report",
        "### db-1",
        &c.session_hex(),
        "lines received: 25",
        "lost: 6 lines in 2 ranges",
        "- lines 10-14 (5)",
        "- line 22",
        "went silent",
        "after line 31",
        "````\nPANIC: ```the end```\n````",
        "joined mid-way: no",
        "### web",
        "clean END (end of input)",
        "datagrams rejected (corrupt): 1",
        "binary: 1",
        "dropped by the kernel",
        "time span: ",
    ] {
        assert!(report.contains(want), "report lacks {want:?}:\n{report}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGUSR1 rewrites the report while the receiver goes on.
#[test]
fn recv_report_refreshed_on_sigusr1() {
    let dir = std::env::temp_dir().join(format!("ncu-recv-usr1-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("now.md");
    let rx = RecvProcess::spawn(&["--json", "--report", path.to_str().unwrap()]);
    let mut c = Crafter::new("svc", rx.addr);
    let hello = c.hello();
    c.send(&hello);
    for d in c.line(b"one") {
        c.send(&d);
    }
    rx.wait_event(T, "line");
    rx.signal(libc::SIGUSR1);
    assert!(ncu_tests::wait_until(T, || std::fs::read_to_string(&path)
        .is_ok_and(|r| r.contains("still running"))));
    let report = std::fs::read_to_string(&path).unwrap();
    assert!(report.contains("### svc"), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--once` exits 0 after the first session ends, with the summary.
#[test]
fn recv_once_exits_after_first_end() {
    let mut rx = RecvProcess::spawn(&["--json", "--once"]);
    let mut c = Crafter::new("one", rx.addr);
    let hello = c.hello();
    c.send(&hello);
    for d in c.line(b"only") {
        c.send(&d);
    }
    let end = c.end();
    c.send(&end);
    rx.wait_event(T, "end");
    let (_, summary) = rx.wait_event(T, "summary");
    assert_eq!(summary["sessions"][0]["fate"], "ended");
    assert!(rx.wait(T).success());
}

/// `--output-dir`: each session appended to its own file, never truncated; an
/// unwritable directory is one message and stdout goes on.
#[test]
fn recv_output_dir_appends_per_session() {
    let dir = std::env::temp_dir().join(format!("ncu-recv-outdir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_s = dir.to_str().unwrap().to_owned();
    let rx = RecvProcess::spawn(&["--json", "--output-dir", &dir_s]);
    let mut a = Crafter::new("web/1", rx.addr);
    let mut b = Crafter::new("db", rx.addr);
    for c in [&mut a, &mut b] {
        let hello = c.hello();
        c.send(&hello);
        for d in c.line(format!("from {}", c.framer.name()).as_bytes()) {
            c.send(&d);
        }
        let end = c.end();
        c.send(&end);
    }
    rx.wait_json(T, |v| v["event"] == "end" && v["sender"] == "web/1");
    rx.wait_json(T, |v| v["event"] == "end" && v["sender"] == "db");
    drop(rx.stop_json());
    let file_a = ncu_tests::session_file(&dir, "web_1", &a.session_hex());
    let text = std::fs::read_to_string(&file_a).expect("web/1's file");
    assert!(text.starts_with("from web/1\n"), "{text}");
    assert!(text.contains("### ncu: end"), "{text}");
    let file_b = ncu_tests::session_file(&dir, "db", &b.session_hex());
    assert!(std::fs::read_to_string(&file_b)
        .unwrap()
        .contains("from db\n"));
    // A second receiver appends to the same session's file.
    let rx = RecvProcess::spawn(&["--json", "--output-dir", &dir_s]);
    let mut a2 = Crafter::new("web/1", rx.addr);
    a2.framer = a.framer.clone();
    // The heartbeat carries the name (a receiver that joins mid-way learns it there).
    let heartbeat = a2.heartbeat();
    a2.send(&heartbeat);
    for d in a2.line(b"appended") {
        a2.send(&d);
    }
    rx.wait_event(T, "line");
    drop(rx.stop_json());
    let text = std::fs::read_to_string(&file_a).unwrap();
    assert!(
        text.contains("from web/1\n") && text.contains("appended\n"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    // Unwritable: a path under a regular file.
    let rx = RecvProcess::spawn(&["--json", "--output-dir", "/dev/null/ncu"]);
    let mut c = Crafter::new("x", rx.addr);
    let hello = c.hello();
    c.send(&hello);
    for i in 0..3 {
        for d in c.line(format!("still here {i}").as_bytes()) {
            c.send(&d);
        }
    }
    let (before, last) = rx.wait_json(T, |v| v["text"] == "still here 2");
    assert_eq!(lines_of(&before).len(), 2, "{last}");
    let errors: Vec<String> = rx
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("--output-dir"))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (rest, status) = rx.stop_json();
    assert!(status.success());
    assert!(rest.last().unwrap()["output_errors"].as_u64().unwrap() >= 3);
}

/// `ncu-recv | head -1`: a closed stdout ends it quietly with status 0.
#[test]
fn recv_closed_stdout_exits_quietly() {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("'{}' 0 | head -1", bin_path("ncu-recv").display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    while !first.ends_with(b"\n") {
        assert_eq!(err.read(&mut byte).unwrap(), 1, "stderr ended early");
        first.push(byte[0]);
    }
    let first = String::from_utf8(first).unwrap();
    let port: u16 = first
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{first}"));
    let mut c = Crafter::new("many", (Ipv4Addr::LOCALHOST, port).into());
    let hello = c.hello();
    c.send(&hello);
    let deadline = Instant::now() + T;
    let mut i = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "ncu-recv | head -1 did not end");
        for d in c.line(format!("line {i}").as_bytes()) {
            c.send(&d);
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(status.success());
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "", "stderr after the first line");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.starts_with("### ncu: start sender=many"), "{out}");
    // sh's status is head's; check ncu-recv's own status with a pipe we close.
    let mut recv = Command::new(bin_path("ncu-recv"))
        .arg("0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = recv.stderr.take().unwrap();
    let mut first = Vec::new();
    while !first.ends_with(b"\n") {
        assert_eq!(err.read(&mut byte).unwrap(), 1);
        first.push(byte[0]);
    }
    let port: u16 = String::from_utf8(first)
        .unwrap()
        .trim_end()
        .split(' ')
        .find_map(|w| w.rsplit(':').next()?.parse().ok())
        .unwrap();
    drop(recv.stdout.take());
    let mut c = Crafter::new("closed", (Ipv4Addr::LOCALHOST, port).into());
    let hello = c.hello();
    c.send(&hello);
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(status) = recv.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "ncu-recv did not stop on a closed stdout"
        );
        for d in c.line(b"into the void") {
            c.send(&d);
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(status.code(), Some(0));
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "");
}

/// The port is taken: exit 1 with one clear line. Bad usage: exit 2.
#[test]
fn recv_port_taken_and_usage_errors() {
    let taken = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let out = Command::new(bin_path("ncu-recv"))
        .arg(taken.local_addr().unwrap().to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("already in use"), "{err}");
    for bad in [
        &["nope"][..],
        &["--dead-after", "5", "0"],
        &["--reorder-window", "1x", "0"],
        &[],
    ] {
        let out = Command::new(bin_path("ncu-recv"))
            .args(bad)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
    let help = Command::new(bin_path("ncu-recv"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for want in [
        "ncu-recv --json 6666 | jq",
        "--once --report crash.md",
        "silent",
        "gap",
    ] {
        assert!(help.contains(want), "--help lacks {want}");
    }
}

/// A real ncu-send feeding ncu-recv, with `--prefix` text output.
#[test]
fn recv_from_real_ncu_send() {
    let rx = RecvProcess::spawn(&["--prefix"]);
    let mut send = Command::new(bin_path("ncu-send"))
        .args(["--name", "real", &rx.addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = send.stdin.take().unwrap();
    let mut want = Vec::new();
    for i in 0..500 {
        let line = format!("real line {i} {}", "z".repeat(i % 300));
        writeln!(input, "{line}").unwrap();
        want.push(format!("real: {line}\n"));
    }
    drop(input);
    assert!(send.wait().unwrap().success());
    let start = rx.next_line(T).unwrap();
    assert!(start.starts_with(b"### ncu: start sender=real"));
    for w in &want {
        assert_eq!(String::from_utf8(rx.next_line(T).unwrap()).unwrap(), *w);
    }
    let end = String::from_utf8(rx.next_line(T).unwrap()).unwrap();
    assert!(end.contains("500 lines sent, 0 lost"), "{end}");
}

/// `ncu-recv ARGS... 0` whose files may not grow past 20,000 bytes (RLIMIT_FSIZE; a
/// write past it fails with EFBIG, as one on a full disk fails with ENOSPC), with
/// `stdout` as its standard output.
fn recv_with_small_files(args: &[&str], stdout: Stdio) -> RecvProcess {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        // An ignored SIGXFSZ stays ignored across exec: writes fail instead of killing.
        .arg("trap '' XFSZ; exec prlimit --fsize=20000:unlimited -- \"$@\" 0")
        .arg("sh")
        .arg(bin_path("ncu-recv"))
        .args(args)
        .stdout(stdout);
    RecvProcess::spawn_command(command)
}

/// Room again: lifts the file size limit of [`recv_with_small_files`].
fn lift_file_limit(rx: &RecvProcess) {
    let raised = Command::new("prlimit")
        .args([
            "--pid",
            &rx.child.id().to_string(),
            "--fsize=unlimited:unlimited",
        ])
        .status()
        .unwrap();
    assert!(raised.success());
}

/// A full disk under standard output (here a file that may not grow: RLIMIT_FSIZE
/// fails writes with EFBIG where a full disk gives ENOSPC; both take the same path):
/// ncu-recv goes on receiving, holds up to 4 MiB of output whole, drops and counts the
/// rest, and once the file may grow again writes what it held, then a marker where
/// the dropped events were, then what came next. No line is torn; the exit status
/// says events were lost.
#[test]
fn recv_full_stdout_holds_whole_events_marks_the_hole_and_goes_on() {
    let dir = std::env::temp_dir().join(format!("ncu-full-stdout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out_path = dir.join("out.json");
    let report = dir.join("report.md");
    let report = report.to_str().unwrap();
    let out = std::fs::File::create(&out_path).unwrap();
    let mut rx = recv_with_small_files(&["--json", "--report", report], out.into());
    let dest = rx.addr.to_string();

    // 25,000 lines: about 6 MB of JSON against 20 kB of file and 4 MiB held.
    const LINES: u64 = 25_000;
    let input: String = (1..=LINES)
        .map(|i| {
            format!(
                "line {i:05} of a log that outgrew its disk {}\n",
                "x".repeat(40)
            )
        })
        .collect();
    let (mut send, mut stdin) = ncu_tests::spawn_send(&["--name", "first", &dest]);
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    ncu_tests::await_exit(&mut send, T);
    rx.wait_stderr(T, "cannot write to standard output");
    // Receiving went on: the report (SIGUSR1) counts every line and the clean END.
    let deadline = Instant::now() + T;
    loop {
        rx.signal(libc::SIGUSR1);
        std::thread::sleep(Duration::from_millis(50));
        let text = std::fs::read_to_string(report).unwrap_or_default();
        if text.contains(&format!("lines received: {LINES}")) && text.contains("clean END") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "report never showed every line:\n{text}"
        );
    }
    assert_eq!(std::fs::metadata(&out_path).unwrap().len(), 20_000);

    lift_file_limit(&rx);
    rx.wait_stderr(T, "standard output takes writes again");
    let (mut send, mut stdin) = ncu_tests::spawn_send(&["--name", "after", &dest]);
    stdin.write_all(b"one\ntwo\nthree\n").unwrap();
    drop(stdin);
    ncu_tests::await_exit(&mut send, T);
    let ended = |text: &str| {
        text.lines()
            .any(|l| l.contains("\"event\":\"end\"") && l.contains("\"sender\":\"after\""))
    };
    let deadline = Instant::now() + T;
    while !ended(&std::fs::read_to_string(&out_path).unwrap()) {
        assert!(
            Instant::now() < deadline,
            "the second session never reached the file"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    rx.signal(libc::SIGTERM);
    let status = rx.wait(T);
    assert_eq!(status.code(), Some(1), "events were lost: status 1");
    rx.wait_stderr(T, "events dropped");

    // Every line whole.
    let text = std::fs::read_to_string(&out_path).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line ({e}): {l:?}")))
        .collect();
    let marker = events
        .iter()
        .position(|v| v["event"] == "output_dropped")
        .expect("a marker where events were dropped");
    assert_eq!(
        events
            .iter()
            .filter(|v| v["event"] == "output_dropped")
            .count(),
        1
    );
    let (before, after) = (&events[..marker], &events[marker + 1..]);
    // Before the hole: the first session from its start, its lines 1..=K in order.
    assert_eq!(before[0]["event"], "start");
    let seqs: Vec<u64> = before[1..]
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    let held = seqs.len() as u64;
    assert!(held > 0);
    assert_eq!(seqs, (1..=held).collect::<Vec<_>>());
    // The hole: exactly the first session's other events (its remaining lines, END).
    let dropped = events[marker]["count"].as_u64().unwrap();
    assert_eq!(dropped, (LINES - held) + 1);
    assert!(
        events[marker]["error"].as_str().unwrap().contains("large"),
        "{}",
        events[marker]
    );
    // After it: the second session whole, then the summary with the same count.
    assert!(
        after.iter().all(|v| v["sender"] != "first"),
        "first-session event after the hole"
    );
    let texts: Vec<&str> = after
        .iter()
        .filter(|v| v["event"] == "line")
        .map(|v| v["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["one", "two", "three"]);
    let summary = after.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["stdout_dropped"], dropped);
    let first = summary["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sender"] == "first")
        .unwrap();
    assert_eq!(
        (first["lines"].as_u64(), first["lost"].as_u64()),
        (Some(LINES), Some(0))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--output-dir` on a full disk (a file that may not grow, as above): failures are
/// counted, and once the file takes writes again the line a failure tore is ended
/// first, a marker says lines may be missing there, and the session's next lines
/// follow whole: no line ever runs into another.
#[test]
fn recv_output_dir_full_disk_never_splices_lines() {
    let dir = std::env::temp_dir().join(format!("ncu-full-outdir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rx = recv_with_small_files(&["--output-dir", dir.to_str().unwrap()], Stdio::piped());
    let dest = rx.addr.to_string();
    let line = |phase: &str, i: u32| format!("{phase} line {i:05} {}", "y".repeat(60));
    let (mut send, mut stdin) = ncu_tests::spawn_send(&["--name", "disk", &dest]);
    let first: String = (1..=2000).map(|i| line("before", i) + "\n").collect();
    stdin.write_all(first.as_bytes()).unwrap();
    stdin.flush().unwrap();
    rx.wait_stderr(T, "--output-dir: cannot write");
    let last_before = format!("{}\n", line("before", 2000));
    let deadline = Instant::now() + T;
    while rx.next_line(T).expect("stdout goes on") != last_before.as_bytes() {
        assert!(
            Instant::now() < deadline,
            "stdout never showed the last line"
        );
    }
    lift_file_limit(&rx);
    let after: Vec<String> = (1..=10).map(|i| line("after", i)).collect();
    for l in &after {
        writeln!(stdin, "{l}").unwrap();
    }
    drop(stdin);
    ncu_tests::await_exit(&mut send, T);
    let deadline = Instant::now() + T;
    loop {
        let l = rx.next_line(T).expect("stdout goes on");
        if l.starts_with(b"### ncu: end") {
            break;
        }
        assert!(Instant::now() < deadline, "no end marker");
    }
    rx.signal(libc::SIGTERM);
    assert!(rx.wait(T).success());

    let files = ncu_tests::files_under(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let text = String::from_utf8(std::fs::read(&files[0]).unwrap()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let marker = lines
        .iter()
        .position(|l| l.starts_with("### ncu: output lines may be missing here"))
        .unwrap_or_else(|| panic!("no marker in {} lines", lines.len()));
    // Before the marker: whole "before" lines in order, and at most one torn one, last.
    let (held, torn) = match lines[marker - 1] {
        l if l.len() == line("before", 1).len() => (&lines[..marker], None),
        l => (&lines[..marker - 1], Some(l)),
    };
    for (i, l) in held.iter().enumerate() {
        assert_eq!(*l, line("before", i as u32 + 1));
    }
    if let Some(t) = torn {
        assert!(
            line("before", held.len() as u32 + 1).starts_with(t),
            "{t:?}"
        );
    }
    // After it: only whole lines and markers. "before" lines still buffered when the
    // file took writes again may come first, in order; then every "after" line.
    let rest: Vec<&str> = lines[marker + 1..]
        .iter()
        .filter(|l| !l.starts_with("### ncu:"))
        .copied()
        .collect();
    let (late, tail) = rest.split_at(rest.len().saturating_sub(after.len()));
    assert_eq!(tail, after);
    let mut last = held.len() as u32;
    for l in late {
        let i: u32 = l["before line ".len()..][..5].parse().unwrap();
        assert!(i > last, "{l:?} after line {last}");
        assert_eq!(*l, line("before", i));
        last = i;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--max-sessions 3`: a quiet host (127.0.0.2) heard first, then three sessions
/// from one address (127.0.0.1, three ports): the fourth session retires the
/// oldest of that address's sessions but the one it began with, reported with a
/// `retired` event; the quiet host, heard least recently, stays; so does the first
/// session of 127.0.0.1. Once every source has one session, the one heard least
/// recently is retired.
#[test]
fn recv_max_sessions_retires_the_heaviest_source() {
    let rx = RecvProcess::spawn(&["--json", "--max-sessions", "3"]);
    let bind = |ip: [u8; 4]| UdpSocket::bind((Ipv4Addr::from(ip), 0)).expect("bind");
    let quiet = bind([127, 0, 0, 2]);
    let flood: Vec<UdpSocket> = (0..3).map(|_| bind([127, 0, 0, 1])).collect();
    let send = |sock: &UdpSocket, text: &str| {
        sock.send_to(format!("{text}\n").as_bytes(), rx.addr)
            .expect("send");
        rx.wait_json(T, |e| {
            e["event"] == "line" && e["text"].as_str() == Some(text)
        });
    };
    send(&quiet, "quiet host");
    send(&flood[0], "first of 127.0.0.1");
    send(&flood[1], "second of 127.0.0.1");
    send(&flood[2], "third of 127.0.0.1");
    let (_, retired) = rx.wait_json(T, |e| e["event"] == "retired");
    let addr = |s: &UdpSocket| s.local_addr().expect("addr").to_string();
    assert_eq!(retired["addr"], addr(&flood[1]), "{retired}");
    // Another host: 127.0.0.1 still has two sessions, and pays with its later one.
    let gone =
        |e: &serde_json::Value, a: &UdpSocket| e["event"] == "retired" && e["addr"] == addr(a);
    send(&bind([127, 0, 0, 3]), "another host");
    rx.wait_json(T, |e| gone(e, &flood[2]));
    // Now one session per source at the limit: the one heard least recently goes.
    send(&bind([127, 0, 0, 4]), "a fourth host");
    rx.wait_json(T, |e| gone(e, &quiet));
    let (events, _) = rx.stop_json();
    assert_eq!(
        events.iter().filter(|e| e["event"] == "retired").count(),
        0,
        "only those three retired"
    );
    let bad = Command::new(bin_path("ncu-recv"))
        .args(["--max-sessions", "0", "0"])
        .stdin(Stdio::null())
        .output()
        .expect("ncu-recv");
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}
