//! Bulk input with UDP segmentation offload (GSO, Linux 4.18+): runs of full
//! datagrams leave as one message, padded to equal sizes. A plain UDP socket must
//! still get every line, exact bytes, in order, in datagrams of at most
//! `--max-datagram` bytes; with `--copies` every datagram twice; sealed too.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ncu_proto::seal::{self, Keys};
use ncu_proto::wire::{Payload, Repr, LINE_PARTIAL};
use ncu_tests::set_rcvbuf;

const TIMEOUT: Duration = Duration::from_secs(20);

/// A scratch directory of this test process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ncu-gso-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// Deterministic lines of 0 to 300 bytes, and every 997th one of 5,000 bytes (cut
/// into fragments), about 2.4 MB.
fn input() -> Vec<Vec<u8>> {
    let mut x: u32 = 0x2545_f491;
    (0..15_000u32)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = if i % 997 == 0 {
                5_000
            } else {
                (x % 301) as usize
            };
            (0..len)
                .map(|j| b' ' + ((i as usize * 7 + j) % 95) as u8)
                .collect()
        })
        .collect()
}

fn bind(v6: bool) -> UdpSocket {
    let socket = if v6 {
        UdpSocket::bind("[::1]:0").or_else(|_| UdpSocket::bind("127.0.0.1:0"))
    } else {
        UdpSocket::bind("127.0.0.1:0")
    }
    .expect("a loopback socket");
    set_rcvbuf(&socket, 64 << 20);
    socket
}

/// What one run delivered: the raw datagram sizes (as received) and the plain
/// datagrams (opened when sealed), up to and including END.
struct Run {
    sizes: Vec<usize>,
    plain: Vec<Vec<u8>>,
}

/// Runs ncu-send with `args` on the input as a file (so that it reads it in bulk).
fn run(name: &str, v6: bool, args: &[&str], keys: Option<&Keys>, copies: usize) -> Run {
    let dir = scratch(name);
    let file = dir.join("input");
    let mut bytes = Vec::new();
    for line in input() {
        bytes.extend_from_slice(&line);
        bytes.push(b'\n');
    }
    std::fs::write(&file, &bytes).expect("input written");
    let socket = bind(v6);
    let dest = socket.local_addr().expect("bound").to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ncu-send"))
        .args(args)
        .args(["--heartbeat", "0", &dest])
        .stdin(std::fs::File::open(&file).expect("input"))
        .stdout(Stdio::null())
        .spawn()
        .expect("ncu-send starts");
    let mut buf = vec![0u8; 65_536];
    let mut got = Run {
        sizes: Vec::new(),
        plain: Vec::new(),
    };
    let deadline = Instant::now() + TIMEOUT;
    let mut ends = 0;
    while ends < copies {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{name}: END did not arrive");
        socket.set_read_timeout(Some(left)).expect("a timeout");
        let n = socket.recv(&mut buf).expect("a datagram in time");
        got.sizes.push(n);
        let plain = match keys {
            None => buf[..n].to_vec(),
            Some(keys) => {
                let mut out = Vec::new();
                seal::open(keys, &buf[..n], &mut out).expect("a sealed datagram opens");
                out
            }
        };
        let repr = Repr::parse(&plain).expect("a valid datagram");
        if matches!(repr.payload, Payload::End { .. }) {
            ends += 1;
        }
        got.plain.push(plain);
    }
    let status = child.wait().expect("ncu-send exits");
    assert!(status.success(), "{name}: {status}");
    let _ = std::fs::remove_dir_all(&dir);
    got
}

/// Checks that `got` holds every input line once per copy, exact bytes, in order
/// (counters and sequence numbers only grow), in datagrams of at most `max`
/// bytes; returns how many DATA datagrams were exactly `max` bytes and how many
/// DATA datagrams there were.
fn check(name: &str, got: &Run, max: usize, copies: usize) -> (usize, usize) {
    assert!(
        got.sizes.iter().all(|&n| n <= max),
        "{name}: a datagram over {max} bytes: {:?}",
        got.sizes.iter().max()
    );
    let want = input();
    let (mut full, mut data) = (0, 0);
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut fragment: Vec<u8> = Vec::new();
    let mut last_counter: Option<u32> = None;
    let mut last_seq = 0;
    // Copies: every datagram `copies` times (a batch, then its copy); each is
    // checked once, at its first arrival.
    let mut seen: HashMap<u32, usize> = HashMap::new();
    for (plain, &size) in got.plain.iter().zip(&got.sizes) {
        let repr = Repr::parse(plain).expect("valid");
        let counter = repr.header.counter;
        let times = seen.entry(counter).or_default();
        *times += 1;
        if *times > 1 {
            continue;
        }
        if let Some(last) = last_counter {
            assert!(counter > last, "{name}: out of order");
        }
        last_counter = Some(counter);
        match repr.payload {
            Payload::Lines { lines: records, .. } => {
                data += 1;
                if size == max {
                    full += 1;
                }
                for (seq, record) in (repr.header.seq..).zip(records) {
                    assert_eq!(seq, last_seq + 1, "{name}: lines in order");
                    assert_eq!(record.flags & LINE_PARTIAL, 0, "{name}");
                    lines.push(record.text.to_vec());
                    last_seq = seq;
                }
            }
            Payload::Fragment {
                offset,
                total,
                bytes,
                ..
            } => {
                assert_eq!(
                    offset as usize,
                    fragment.len(),
                    "{name}: fragments in order"
                );
                fragment.extend_from_slice(bytes);
                if fragment.len() == total as usize {
                    assert_eq!(repr.header.seq, last_seq + 1, "{name}: lines in order");
                    last_seq = repr.header.seq;
                    lines.push(std::mem::take(&mut fragment));
                }
            }
            _ => {}
        }
    }
    assert_eq!(lines.len(), want.len(), "{name}: every line arrives");
    for (i, (a, b)) in lines.iter().zip(&want).enumerate() {
        assert_eq!(a, b, "{name}: line {} differs", i + 1);
    }
    assert!(
        seen.values().all(|&n| n == copies),
        "{name}: every datagram {copies} time(s)"
    );
    (full, data)
}

#[test]
fn bulk_input_with_gso_arrives_complete_and_in_order() {
    for (name, v6, args, max) in [
        ("v4", false, &[][..], 1400),
        ("v6", true, &[][..], 1400),
        ("max-1200", false, &["--max-datagram", "1200"][..], 1200),
    ] {
        let got = run(name, v6, args, None, 1);
        let (full, data) = check(name, &got, max, 1);
        // Padded to equal sizes for GSO: nearly every DATA datagram is full.
        assert!(full * 10 > data * 9, "{name}: {full} of {data} full");
    }
}

#[test]
fn without_gso_datagrams_keep_their_natural_size() {
    let got = run("no-gso", false, &["--no-gso"], None, 1);
    let (full, data) = check("no-gso", &got, 1400, 1);
    assert!(
        full * 10 < data,
        "no padding without GSO: {full} of {data} full"
    );
}

#[test]
fn copies_with_gso_send_every_datagram_twice() {
    let got = run("copies", false, &["--copies", "2"], None, 2);
    check("copies", &got, 1400, 2);
}

#[test]
fn sealed_with_gso_stays_within_max_datagram() {
    let dir = scratch("key");
    let key = dir.join("key");
    let status = Command::new(env!("CARGO_BIN_EXE_ncu-send"))
        .args(["--gen-key", key.to_str().expect("utf-8")])
        .stderr(Stdio::null())
        .status()
        .expect("ncu-send --gen-key runs");
    assert!(status.success());
    let keys = ncu_host::load_keys(&key).expect("the key loads");
    let got = run(
        "sealed",
        false,
        &["--key-file", key.to_str().expect("utf-8")],
        Some(&keys),
        1,
    );
    let (full, data) = check("sealed", &got, 1400, 1);
    assert!(full * 10 > data * 9, "sealed: {full} of {data} full");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_lone_line_after_bulk_goes_at_its_natural_size() {
    use std::io::Write;
    let socket = bind(false);
    let dest = socket.local_addr().expect("bound").to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ncu-send"))
        .args(["--heartbeat", "0", &dest])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("ncu-send starts");
    let mut stdin = child.stdin.take().expect("piped");
    socket.set_read_timeout(Some(TIMEOUT)).expect("a timeout");
    let mut buf = vec![0u8; 65_536];
    socket.recv(&mut buf).expect("HELLO");
    // Bulk: 200 lines at once, then wait for all of them.
    let bulk: Vec<u8> = (0..200)
        .flat_map(|i| format!("bulk line {i:04} {}\n", "b".repeat(60)).into_bytes())
        .collect();
    stdin.write_all(&bulk).expect("write");
    let mut lines = 0;
    while lines < 200 {
        let n = socket.recv(&mut buf).expect("bulk datagrams");
        assert!(n <= 1400);
        if let Payload::Lines { count, .. } = Repr::parse(&buf[..n]).expect("valid").payload {
            lines += usize::from(count);
        }
    }
    stdin.write_all(b"just one line\n").expect("write");
    let n = socket.recv(&mut buf).expect("the lone line");
    let repr = Repr::parse(&buf[..n]).expect("valid");
    match repr.payload {
        Payload::Lines { count: 1, lines } => {
            let texts: Vec<&[u8]> = lines.map(|l| l.text).collect();
            assert_eq!(texts, vec![&b"just one line"[..]]);
        }
        other => panic!("not one line: {other:?}"),
    }
    assert!(n < 100, "a lone line is not padded: {n} bytes");
    drop(stdin);
    assert!(child.wait().expect("exits").success());
}
