//! Where the crash goes next, with real parts: the `--on-silent` hook (once, with
//! its variables and report; killed at its timeout while another sender flows; a
//! failing or missing command logged), `--journal-export` read by the real
//! `systemd-journal-remote` and queried with `journalctl`, and `--metrics` scraped
//! over HTTP while 1,000 senders stream, parsed by the `prometheus_client` parser.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ncu_tests::{bin_path, spawn_send, wait_until, Crafter, RecvProcess};

const T: Duration = Duration::from_secs(30);

fn scratch(name: &str) -> PathBuf {
    ncu_tests::scratch(&format!("int-{name}"))
}

/// A file's text (lossy: log lines may be binary), empty while it does not exist.
fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

#[test]
fn a_killed_sender_runs_the_hook_once_with_its_facts_and_report() {
    let dir = scratch("hook");
    let hook = format!(
        "echo run >> {d}/runs; env | grep '^NCU_' | sort > {d}/env; cp \"$NCU_REPORT\" {d}/report.md",
        d = dir.display()
    );
    let rx = RecvProcess::spawn(&["--json", "--dead-after", "1s", "--on-silent", &hook]);
    let (mut send, mut stdin) = spawn_send(&["--name", "db-7", &rx.addr.to_string()]);
    std::io::Write::write_all(&mut stdin, b"step 1\nKernel panic - not syncing: test\n")
        .expect("write to ncu-send");
    rx.wait_json(T, |v| v["text"] == "Kernel panic - not syncing: test");
    send.kill().expect("SIGKILL");
    let _ = send.wait();
    rx.wait_json(T, |v| v["event"] == "silent");
    let logged = rx.wait_stderr(T, "--on-silent hook for sender=db-7");
    assert!(logged.contains("done (exit 0)"), "{logged}");
    let env = read(&dir.join("env"));
    for want in [
        "NCU_EVENT=silent",
        "NCU_SENDER=db-7",
        "NCU_LAST_SEQ=2",
        "NCU_LAST_TEXT=Kernel panic - not syncing: test",
        "NCU_LINES=2",
        "NCU_LOST=0",
        "NCU_REASON=dead_after",
        "NCU_SOURCE=ncu",
        "NCU_REPORT=",
        "NCU_ADDR=127.0.0.1:",
    ] {
        assert!(
            env.lines().any(|l| l.starts_with(want)),
            "{want} not in:\n{env}"
        );
    }
    let report = read(&dir.join("report.md"));
    assert!(report.contains("### db-7"), "{report}");
    assert!(report.contains("**went silent** after line 2"), "{report}");
    assert!(
        report.contains("\nKernel panic - not syncing: test\n"),
        "{report}"
    );
    let (_, status) = rx.stop_json();
    assert!(status.success());
    assert_eq!(
        read(&dir.join("runs")),
        "run\n",
        "the hook ran exactly once"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether a process runs `sleep ARG`.
fn sleeping(arg: &str) -> bool {
    let want = format!("sleep\0{arg}\0");
    std::fs::read_dir("/proc").is_ok_and(|d| {
        d.flatten().any(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c.ends_with(want.as_bytes()))
        })
    })
}

#[test]
fn a_hanging_hook_is_killed_at_its_timeout_while_lines_keep_flowing() {
    let marker = format!("1000.{}", std::process::id());
    let hook = format!("sleep {marker}");
    let rx = RecvProcess::spawn(&[
        "--json",
        "--dead-after",
        "1s",
        "--hook-timeout",
        "2s",
        "--on-silent",
        &hook,
    ]);
    let mut dying = Crafter::new("dying", rx.addr);
    let hello = dying.hello();
    dying.send(&hello);
    for d in dying.line(b"bye") {
        dying.send(&d);
    }
    // Another sender streams through the silence, the hook and its kill.
    let mut steady = Crafter::new("steady", rx.addr);
    let hello = steady.hello();
    steady.send(&hello);
    let mut sent = 0u32;
    let mut got = Vec::new();
    let mut hook_ran = false;
    let killed = wait_until(T, || {
        sent += 1;
        for d in steady.line(format!("steady {sent}").as_bytes()) {
            steady.send(&d);
        }
        let (_, v) = rx.wait_json(T, |v| v["sender"] == "steady" && v["event"] == "line");
        got.push(v["text"].as_str().unwrap_or_default().to_owned());
        hook_ran |= sleeping(&marker);
        rx.stderr_lines()
            .iter()
            .any(|l| l.contains("killed, still running after its timeout"))
    });
    assert!(killed, "the hook was not killed: {:?}", rx.stderr_lines());
    assert!(hook_ran, "the hook ran");
    assert!(
        wait_until(T, || !sleeping(&marker)),
        "the hook's process group is gone"
    );
    let want: Vec<String> = (1..=sent).map(|i| format!("steady {i}")).collect();
    assert_eq!(got, want, "the other sender's lines flowed unbroken");
    assert!(sent > 10, "lines flowed while the hook hung: {sent}");
    let (_, status) = rx.stop_json();
    assert!(status.success());
}

#[test]
fn a_failing_or_missing_hook_is_logged_and_receiving_goes_on() {
    for (hook, want) in [
        ("echo nope >&2; exit 7", "failed (exit 7); stderr: nope"),
        ("no-such-command-ncu", "failed (exit 127); stderr: "),
    ] {
        let rx = RecvProcess::spawn(&["--json", "--dead-after", "1s", "--on-silent", hook]);
        let mut c = Crafter::new("x", rx.addr);
        let hello = c.hello();
        c.send(&hello);
        rx.wait_json(T, |v| v["event"] == "start");
        let logged = rx.wait_stderr(T, want);
        assert!(logged.contains("--on-silent hook for sender=x"), "{logged}");
        // Still receiving.
        let mut again = Crafter::new("after", rx.addr);
        let hello = again.hello();
        again.send(&hello);
        for d in again.line(b"still here") {
            again.send(&d);
        }
        rx.wait_json(T, |v| v["text"] == "still here");
        let (_, status) = rx.stop_json();
        assert!(status.success());
    }
}

const MESSAGE_ID_SILENT: &str = "13f3cc2063bb4f5d8fc980de5ca0244d";

fn journalctl(file: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new("journalctl")
        .arg("--file")
        .arg(file)
        .args(["-o", "json", "--no-pager"])
        .args(args)
        .output()
        .expect("journalctl runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A journal field as bytes: journalctl's JSON gives text, or an array of byte
/// values for binary data.
fn bytes_of(v: &serde_json::Value) -> Vec<u8> {
    match v {
        serde_json::Value::String(s) => s.as_bytes().to_vec(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|b| b.as_u64())
            .map(|b| b as u8)
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn systemd_journal_remote_reads_the_export_stream() {
    let dir = scratch("journal");
    let journal = dir.join("remote.journal");
    let (reader, writer) = std::io::pipe().expect("a pipe");
    let mut command = Command::new(bin_path("ncu-recv"));
    command
        .args([
            "--journal-export",
            "-",
            "--dead-after",
            "1s",
            "--output-dir",
        ])
        .arg(dir.join("out"))
        .arg("127.0.0.1:0")
        .stdout(writer);
    let rx = RecvProcess::spawn_command(command);
    let mut remote = Command::new("/lib/systemd/systemd-journal-remote")
        .arg("-o")
        .arg(&journal)
        .arg("-")
        .stdin(reader)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-journal-remote runs (packaging/setup.sh installs it)");
    let mut c = Crafter::new("db-7", rx.addr);
    let hello = c.hello();
    c.send(&hello);
    let lines: [&[u8]; 3] = [
        b"first line",
        b"binary \xff\xfe line",
        b"Kernel panic - not syncing",
    ];
    let sent_from = ncu_tests::wall_us();
    for l in lines {
        for d in c.line(l) {
            c.send(&d);
        }
    }
    let sent_until = ncu_tests::wall_us();
    // A kernel netconsole record (level 3) from a machine of its own.
    let kernel = UdpSocket::bind("127.0.0.3:0").expect("bind 127.0.0.3");
    kernel
        .send_to(b"3,77,5000000,-;kernel: oops\n", rx.addr)
        .expect("send");
    // db-7 says nothing more: it goes silent after --dead-after (seen in its
    // --output-dir file; standard output goes to journal-remote).
    let out = dir.join("out");
    assert!(
        wait_until(T, || ncu_tests::files_under(&out.join("db-7"))
            .iter()
            .any(|f| read(f).contains("### ncu: silent"))),
        "db-7 never went silent"
    );
    let mut rx = rx;
    rx.signal(libc::SIGTERM);
    assert!(rx.wait(T).success());
    let status = remote.wait().expect("journal-remote ends with its input");
    assert!(status.success(), "{status:?}");
    let entries = journalctl(&journal, &[]);
    let db7: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["_HOSTNAME"] == "db-7" && e["NCU_SEQ"].is_string())
        .collect();
    let got: Vec<Vec<u8>> = db7.iter().map(|e| bytes_of(&e["MESSAGE"])).collect();
    assert_eq!(
        got,
        lines.iter().map(|l| l.to_vec()).collect::<Vec<_>>(),
        "{entries:#?}"
    );
    for (i, e) in db7.iter().enumerate() {
        assert_eq!(e["NCU_SEQ"], (i + 1).to_string());
        assert_eq!(e["PRIORITY"], "6");
        assert_eq!(e["NCU_SESSION"], c.session_hex());
        assert_eq!(e["SYSLOG_IDENTIFIER"], "ncu");
        // The time the line was sent.
        let at: u64 = e["__REALTIME_TIMESTAMP"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("a time");
        assert!(
            (sent_from..=sent_until).contains(&at),
            "{at} not in {sent_from}..={sent_until}"
        );
    }
    let oops = entries
        .iter()
        .find(|e| e["MESSAGE"] == "kernel: oops")
        .expect("the kernel record");
    assert_eq!(
        (
            &oops["PRIORITY"],
            &oops["NCU_KERNEL_SEQ"],
            &oops["SYSLOG_IDENTIFIER"]
        ),
        (
            &serde_json::json!("3"),
            &serde_json::json!("77"),
            &serde_json::json!("kernel")
        )
    );
    // journalctl MESSAGE_ID=<silent> lists every machine that died.
    let dead = journalctl(&journal, &[&format!("MESSAGE_ID={MESSAGE_ID_SILENT}")]);
    let hosts: Vec<&str> = dead
        .iter()
        .filter_map(|e| e["_HOSTNAME"].as_str())
        .collect();
    assert!(hosts.contains(&"db-7"), "{dead:#?}");
    assert!(
        dead.iter()
            .any(|e| e["NCU_LAST_TEXT"] == "Kernel panic - not syncing"),
        "{dead:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_journal_reader_that_goes_away_is_one_line_and_receiving_goes_on() {
    let dir = scratch("journal-gone");
    let report = dir.join("r.md");
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let mut command = Command::new(bin_path("ncu-recv"));
    command
        .args(["--journal-export", "-", "--report"])
        .arg(&report)
        .arg("127.0.0.1:0")
        .stdout(writer);
    let rx = RecvProcess::spawn_command(command);
    let mut c = Crafter::new("on", rx.addr);
    let hello = c.hello();
    c.send(&hello);
    for i in 0..50 {
        for d in c.line(format!("line {i}").as_bytes()) {
            c.send(&d);
        }
    }
    rx.wait_stderr(T, "its reader went away");
    let mut c2 = Crafter::new("later", rx.addr);
    let hello = c2.hello();
    c2.send(&hello);
    for d in c2.line(b"after") {
        c2.send(&d);
    }
    let end = c2.end();
    c2.send(&end);
    let mut rx = rx;
    // The report (SIGUSR1) shows both senders: receiving went on.
    assert!(wait_until(T, || {
        rx.signal(libc::SIGUSR1);
        std::thread::sleep(Duration::from_millis(100));
        read(&report).contains("### later")
    }));
    rx.signal(libc::SIGTERM);
    assert!(rx.wait(T).success());
    let said: Vec<String> = rx
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("reader went away"))
        .collect();
    assert!(said.len() <= 1, "one line: {said:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Scrapes `url` with Python's HTTP client and parses it with the real
/// `prometheus_client` parser; returns `name{labels} value` lines, sorted.
fn scrape(url: &str) -> Vec<String> {
    let script = r#"
import sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
src = sys.argv[1]
text = open(src).read() if not src.startswith("http") else urllib.request.urlopen(src, timeout=5).read().decode()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;
    let out = Command::new("python3")
        .args(["-c", script, url])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the parser refused it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

fn value(samples: &[String], series: &str) -> Option<f64> {
    samples
        .iter()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_scraped_while_1000_senders_stream_agree_with_the_summary() {
    let dir = scratch("metrics");
    let file = dir.join("ncu.prom");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let metrics = format!("127.0.0.1:{port}");
    let rx = RecvProcess::spawn(&[
        "--json",
        "--metrics",
        &metrics,
        "--metrics-file",
        file.to_str().expect("UTF-8"),
    ]);
    rx.wait_stderr(T, "metrics on http://");
    let url = format!("http://{metrics}/metrics");
    let sockets: Vec<UdpSocket> = (0..50)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("a socket"))
        .collect();
    let mut senders: Vec<Crafter> = (0..1000)
        .map(|i| {
            let s = sockets[i % 50].try_clone().expect("a clone");
            Crafter::with_socket(&format!("host-{i:04}"), rx.addr, s)
        })
        .collect();
    for c in &mut senders {
        let hello = c.hello();
        c.send(&hello);
    }
    // Scrapes while they stream: every one parses.
    for round in 0..5 {
        for c in &mut senders {
            for d in c.line(format!("round {round}").as_bytes()) {
                c.send(&d);
            }
        }
        let samples = scrape(&url);
        assert!(
            value(&samples, "ncu_datagrams_received_total{}").is_some(),
            "{samples:?}"
        );
    }
    for c in &mut senders {
        let end = c.end();
        c.send(&end);
    }
    // Once every session ended (the snapshot is at most a second old), the counters.
    let mut samples = Vec::new();
    assert!(
        wait_until(T, || {
            samples = scrape(&url);
            value(&samples, "ncu_sessions{state=ended}") == Some(1000.0)
        }),
        "{samples:?}"
    );
    let up = samples
        .iter()
        .filter(|l| l.starts_with("ncu_sender_up{"))
        .count();
    assert_eq!(
        up, 500,
        "per-sender series bounded by --metrics-max-senders"
    );
    assert_eq!(
        value(&samples, "ncu_metrics_senders_omitted{}"),
        Some(500.0)
    );
    assert_eq!(value(&samples, "ncu_lines{}"), Some(5000.0));
    assert_eq!(value(&samples, "ncu_lost_lines{}"), Some(0.0));
    let datagrams = value(&samples, "ncu_datagrams_received_total{}").expect("datagrams");
    // The file has the same text, written atomically.
    assert!(wait_until(T, || file.exists()));
    let from_file = scrape(file.to_str().expect("UTF-8"));
    assert!(value(&from_file, "ncu_datagrams_received_total{}").is_some());
    let (events, status) = rx.stop_json();
    assert!(status.success());
    let summary = events
        .iter()
        .find(|v| v["event"] == "summary")
        .expect("a summary");
    assert_eq!(summary["datagrams"].as_f64(), Some(datagrams), "{summary}");
    assert_eq!(
        summary["corrupt_total"].as_f64(),
        value(&samples, "ncu_datagrams_rejected_total{reason=any}")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_metrics_port_that_is_taken_is_one_line_and_receiving_goes_on() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr: SocketAddr = taken.local_addr().expect("its address");
    let rx = RecvProcess::spawn(&["--json", "--metrics", &addr.to_string()]);
    let said = rx.wait_stderr(T, "--metrics");
    assert!(said.contains("cannot listen"), "{said}");
    let mut c = Crafter::new("fine", rx.addr);
    let hello = c.hello();
    c.send(&hello);
    for d in c.line(b"still received") {
        c.send(&d);
    }
    rx.wait_json(T, |v| v["text"] == "still received");
    let (_, status) = rx.stop_json();
    assert!(status.success());
}
