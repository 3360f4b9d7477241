//! ncu-send with `--gen-key` / `--key-file` against a plain UDP socket in the test:
//! every datagram is opened with `ncu_proto::seal` and decoded with `wire`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ncu_proto::seal::{self, Keys};
use ncu_proto::wire::{Payload, Repr};
use ncu_tests::{await_exit, bin_path, spawn_send, UdpCapture};

const TIMEOUT: Duration = Duration::from_secs(10);
const MARKER: &str = "SECRET-MARKER-7f3a";

/// A fresh path in the temp directory (removed on drop).
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> TempPath {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        TempPath(std::env::temp_dir().join(format!(
            "ncu-sealed-e2e-{}-{nanos}-{name}",
            std::process::id()
        )))
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn arg(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs ncu-send with `args` on `input` to its end.
fn run_on(args: &[&str], input: &[u8]) -> Output {
    let (mut child, mut stdin) = spawn_send(args);
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        // ncu-send may exit before reading (usage errors): a broken pipe is fine.
        let _ = stdin.write_all(&input);
    });
    await_exit(&mut child, TIMEOUT);
    writer.join().expect("writer");
    child.wait_with_output().expect("exit status")
}

fn gen_key(name: &str) -> TempPath {
    let key = TempPath::new(name);
    let out = Command::new(bin_path("ncu-send"))
        .args(["--gen-key", key.arg()])
        .output()
        .expect("ncu-send runs");
    assert!(out.status.success(), "{out:?}");
    key
}

/// Raw datagrams up to and including the END of the last session, opened.
/// Returns (raw, opened) pairs.
fn capture_sessions(cap: &UdpCapture, keys: &Keys, sessions: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut all = Vec::new();
    let mut ends = 0;
    while ends < sessions {
        let raw = cap.recv(TIMEOUT).expect("a datagram within the timeout");
        let mut opened = Vec::new();
        seal::open(keys, &raw, &mut opened)
            .unwrap_or_else(|e| panic!("a sealed datagram that does not open: {e:?}"));
        let repr = Repr::parse(&opened).unwrap_or_else(|e| panic!("undecodable: {e}"));
        if matches!(repr.payload, Payload::End { .. }) {
            ends += 1;
        }
        all.push((raw, opened));
    }
    all
}

/// Session id -> (seq -> line text).
type BySession = BTreeMap<u64, BTreeMap<u64, Vec<u8>>>;

/// Lines rebuilt per session, in the order the sessions started: session id ->
/// (seq -> text), plus the order of session ids.
fn lines_by_session(opened: &[Vec<u8>]) -> (Vec<u64>, BySession) {
    let mut order = Vec::new();
    let mut by = BySession::new();
    for bytes in opened {
        let repr = Repr::parse(bytes).expect("decodes");
        let (session, seq) = (repr.header.session, repr.header.seq);
        if !order.contains(&session) {
            assert!(
                matches!(repr.payload, Payload::Hello { .. }),
                "a session starts with HELLO"
            );
            assert_eq!(seq, 1, "a new session numbers lines from 1");
            order.push(session);
        }
        let lines = by.entry(session).or_default();
        match repr.payload {
            Payload::Lines { lines: records, .. } => {
                for (i, l) in records.enumerate() {
                    assert!(lines.insert(seq + i as u64, l.text.to_vec()).is_none());
                }
            }
            Payload::Fragment {
                offset,
                total,
                bytes,
                ..
            } => {
                let line = lines
                    .entry(seq)
                    .or_insert_with(|| vec![0u8; total as usize]);
                line[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
            }
            _ => {}
        }
    }
    (order, by)
}

#[test]
fn gen_key_writes_a_private_key_file() {
    let key = gen_key("gen");
    let mode = std::fs::metadata(key.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(key.path()).unwrap();
    let keys: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(keys.len(), 1, "{text}");
    assert_eq!(keys[0].len(), 64);
    assert!(keys[0].bytes().all(|b| b.is_ascii_hexdigit()), "{text}");
    ncu_host::load_keys(key.path()).expect("loads");

    // Never overwrites: exit 1 with the reason.
    let again = Command::new(bin_path("ncu-send"))
        .args(["--gen-key", key.arg()])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains(key.arg()));
    assert_eq!(std::fs::read_to_string(key.path()).unwrap(), text);
}

#[test]
fn sealed_stream_hides_the_lines_and_opens_to_them() {
    let key = gen_key("stream");
    let keys = ncu_host::load_keys(key.path()).unwrap();
    let cap = UdpCapture::bind();
    let input: Vec<String> = (1..=300)
        .map(|i| format!("line {i} {MARKER} {}", "y".repeat(i % 50)))
        .collect();
    let out = run_on(
        &["--key-file", key.arg(), &cap.dest()],
        (input.join("\n") + "\n").as_bytes(),
    );
    assert!(out.status.success(), "{out:?}");
    let all = capture_sessions(&cap, &keys, 1);
    for (raw, _) in &all {
        assert!(
            !raw.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "line text in the clear"
        );
        assert!(
            !raw.windows(4).any(|w| w == b"line"),
            "line text in the clear"
        );
    }
    let opened: Vec<Vec<u8>> = all.into_iter().map(|(_, o)| o).collect();
    let (order, by) = lines_by_session(&opened);
    assert_eq!(order.len(), 1);
    let lines = &by[&order[0]];
    assert_eq!(lines.len(), input.len());
    for (i, want) in input.iter().enumerate() {
        assert_eq!(lines[&(i as u64 + 1)], want.as_bytes());
    }

    // Another key opens none of it.
    let other = gen_key("other");
    let cap = UdpCapture::bind();
    let out = run_on(&["--key-file", other.arg(), &cap.dest()], b"x\n");
    assert!(out.status.success(), "{out:?}");
    let raw = cap.recv(TIMEOUT).expect("HELLO");
    assert!(seal::open(&keys, &raw, &mut Vec::new()).is_err());
}

#[test]
fn group_readable_key_file_is_refused() {
    let key = gen_key("open");
    std::fs::set_permissions(key.path(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let cap = UdpCapture::bind();
    let out = run_on(&["--key-file", key.arg(), &cap.dest()], b"a line\n");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(stderr.contains(key.arg()), "{stderr}");
    assert!(
        cap.recv(Duration::from_millis(100)).is_none(),
        "nothing sent"
    );

    let missing = TempPath::new("missing");
    let out = run_on(&["--key-file", missing.arg(), &cap.dest()], b"a line\n");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(missing.arg()));
}

#[test]
fn sealed_datagrams_stay_within_max_datagram() {
    let key = gen_key("size");
    let keys = ncu_host::load_keys(key.path()).unwrap();
    let cap = UdpCapture::bind();
    let long = format!("{MARKER}{}", "z".repeat(10_000));
    let input: Vec<String> = (0..200)
        .map(|i| format!("short {i} {}", "w".repeat(i * 7 % 300)))
        .chain([long.clone(), "after".to_owned()])
        .collect();
    let out = run_on(
        &[
            "--key-file",
            key.arg(),
            "--max-datagram",
            "1400",
            &cap.dest(),
        ],
        (input.join("\n") + "\n").as_bytes(),
    );
    assert!(out.status.success(), "{out:?}");
    let all = capture_sessions(&cap, &keys, 1);
    let mut fragments = 0;
    for (raw, opened) in &all {
        assert!(raw.len() <= 1400, "a {}-byte datagram", raw.len());
        if matches!(
            Repr::parse(opened).unwrap().payload,
            Payload::Fragment { .. }
        ) {
            fragments += 1;
        }
    }
    assert!(fragments >= 8, "the long line went in fragments");
    assert!(
        all.iter().any(|(raw, _)| raw.len() > 1350),
        "datagrams are filled"
    );
    let opened: Vec<Vec<u8>> = all.into_iter().map(|(_, o)| o).collect();
    let (order, by) = lines_by_session(&opened);
    let lines: Vec<&Vec<u8>> = by[&order[0]].values().collect();
    let want: Vec<&[u8]> = input.iter().map(|l| l.as_bytes()).collect();
    assert_eq!(lines, want);

    // Too small for a sealed datagram: a usage error.
    let out = run_on(
        &[
            "--key-file",
            key.arg(),
            "--max-datagram",
            "143",
            &cap.dest(),
        ],
        b"x\n",
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("144"));
}

#[test]
fn sealing_sender_rolls_over_to_a_new_session() {
    // The real limit is 2^31 datagrams; a hidden option lowers it.
    let key = gen_key("roll");
    let keys = ncu_host::load_keys(key.path()).unwrap();
    let cap = UdpCapture::bind();
    let input: Vec<String> = (1..=40).map(|i| format!("roll {i}")).collect();
    let out = run_on(
        &[
            "--key-file",
            key.arg(),
            "--no-pack",
            "--rollover-after",
            "8",
            &cap.dest(),
        ],
        (input.join("\n") + "\n").as_bytes(),
    );
    assert!(out.status.success(), "{out:?}");
    // Only the last session ends with END: read until it, then nothing more is due.
    let mut opened = Vec::new();
    loop {
        let raw = cap.recv(TIMEOUT).expect("a datagram within the timeout");
        let mut o = Vec::new();
        seal::open(&keys, &raw, &mut o).expect("opens");
        let repr = Repr::parse(&o).expect("decodes");
        assert!(repr.header.counter < 8, "counter {}", repr.header.counter);
        let end = matches!(repr.payload, Payload::End { .. });
        opened.push(o);
        if end {
            break;
        }
    }
    let (order, by) = lines_by_session(&opened);
    assert!(order.len() >= 5, "{} sessions", order.len());
    let got: Vec<Vec<u8>> = order.iter().flat_map(|s| by[s].values().cloned()).collect();
    let want: Vec<Vec<u8>> = input.iter().map(|l| l.clone().into_bytes()).collect();
    assert_eq!(got, want);
}
