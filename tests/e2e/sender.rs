//! ncu-send against a plain UDP socket in the test, decoded with `ncu_proto::wire`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ncu_proto::wire::{EndReason, Payload, Repr, LINE_CONTINUATION, LINE_PARTIAL};
use ncu_tests::{
    await_exit, bin_path, pipe_unread, process_state, spawn_send, wait_until, UdpCapture,
};

/// Upper bound for anything to arrive; never a fixed sleep.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One decoded datagram, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Hello {
        seq: u64,
        source: String,
    },
    /// The lines of one DATA datagram: (seq, flags, text).
    Lines(Vec<(u64, u8, Vec<u8>)>),
    Fragment {
        seq: u64,
        offset: u32,
        total: u32,
        flags: u8,
        bytes: Vec<u8>,
    },
    Heartbeat {
        seq: u64,
    },
    End {
        seq: u64,
        reason: EndReason,
    },
}

fn decode(bytes: &[u8]) -> Got {
    let repr = Repr::parse(bytes).unwrap_or_else(|e| panic!("undecodable datagram: {e}"));
    let seq = repr.header.seq;
    match repr.payload {
        Payload::Hello { source, .. } => Got::Hello {
            seq,
            source: source.to_owned(),
        },
        Payload::Lines { lines, .. } => Got::Lines(
            lines
                .enumerate()
                .map(|(i, l)| (seq + i as u64, l.flags, l.text.to_vec()))
                .collect(),
        ),
        Payload::Fragment {
            offset,
            total,
            line_flags,
            bytes,
        } => Got::Fragment {
            seq,
            offset,
            total,
            flags: line_flags,
            bytes: bytes.to_vec(),
        },
        Payload::Heartbeat { .. } => Got::Heartbeat { seq },
        Payload::End { reason, .. } => Got::End { seq, reason },
        other @ (Payload::Nack { .. } | Payload::Gone { .. }) => {
            panic!("a sender without recovery sent {other:?}")
        }
        other @ Payload::Companion { .. } => panic!("a sender without --netconsole sent {other:?}"),
    }
}

/// Receives and decodes the next datagram, failing the test after [`TIMEOUT`].
fn next(cap: &UdpCapture) -> Got {
    decode(&next_raw(cap))
}

fn next_raw(cap: &UdpCapture) -> Vec<u8> {
    cap.recv(TIMEOUT).expect("a datagram within the timeout")
}

/// Every datagram up to and including END.
fn until_end(cap: &UdpCapture) -> Vec<Got> {
    let mut all = Vec::new();
    loop {
        let got = next(cap);
        let end = matches!(got, Got::End { .. });
        all.push(got);
        if end {
            return all;
        }
    }
}

/// Lines rebuilt from DATA datagrams and fragments: seq -> (flags, text).
fn lines_of(all: &[Got]) -> BTreeMap<u64, (u8, Vec<u8>)> {
    let mut lines = BTreeMap::new();
    for got in all {
        match got {
            Got::Lines(records) => {
                for (seq, flags, text) in records {
                    assert!(lines.insert(*seq, (*flags, text.clone())).is_none());
                }
            }
            Got::Fragment {
                seq,
                offset,
                total,
                flags,
                bytes,
            } => {
                let entry = lines
                    .entry(*seq)
                    .or_insert_with(|| (*flags, vec![0u8; *total as usize]));
                let at = *offset as usize;
                entry.1[at..at + bytes.len()].copy_from_slice(bytes);
            }
            _ => {}
        }
    }
    lines
}

fn ncu_send(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin_path("ncu-send"));
    cmd.args(args);
    cmd
}

/// Runs ncu-send on `input` to the end.
fn run_on(args: &[&str], input: &[u8]) -> Output {
    let (mut child, mut stdin) = spawn_send(args);
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = wait_output(&mut child);
    writer.join().expect("writer").expect("input written");
    out
}

/// Waits for the process, failing the test after [`TIMEOUT`].
fn wait_output(child: &mut Child) -> Output {
    await_exit(child, TIMEOUT);
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut stderr).expect("stderr");
    }
    let status = child.wait().expect("exit status");
    Output {
        status,
        stdout: Vec::new(),
        stderr: stderr.into_bytes(),
    }
}

#[test]
fn lines_arrive_whole_and_numbered() {
    let cap = UdpCapture::bind();
    let input: Vec<String> = (1..=2000)
        .map(|i| format!("<6>[{i:>6}.000000] line {i} {}", "x".repeat(i % 97)))
        .collect();
    let out = run_on(&[&cap.dest()], (input.join("\n") + "\n").as_bytes());
    assert!(out.status.success(), "{out:?}");
    let all = until_end(&cap);
    assert!(matches!(&all[0], Got::Hello { seq: 1, source } if source == "stdin"));
    let lines = lines_of(&all);
    assert_eq!(lines.len(), input.len());
    for (i, want) in input.iter().enumerate() {
        assert_eq!(lines[&(i as u64 + 1)], (0, want.as_bytes().to_vec()));
    }
    let datagrams = all.len() - 2;
    assert!(datagrams < input.len(), "lines read together are packed");
    assert_eq!(
        all.last(),
        Some(&Got::End {
            seq: 2000,
            reason: EndReason::Eof
        })
    );
}

#[test]
fn no_pack_sends_one_line_per_datagram() {
    let cap = UdpCapture::bind();
    let out = run_on(&["--no-pack", &cap.dest()], b"a\nb\nc\n");
    assert!(out.status.success());
    let all = until_end(&cap);
    let data: Vec<&Got> = all.iter().filter(|g| matches!(g, Got::Lines(_))).collect();
    assert_eq!(
        data,
        [
            &Got::Lines(vec![(1, 0, b"a".to_vec())]),
            &Got::Lines(vec![(2, 0, b"b".to_vec())]),
            &Got::Lines(vec![(3, 0, b"c".to_vec())]),
        ]
    );
}

#[test]
fn long_lines_arrive_as_fragments() {
    let cap = UdpCapture::bind();
    let line = |len: usize, seed: u8| -> Vec<u8> {
        (0..len)
            .map(|i| b'a' + ((i * 7 + usize::from(seed)) % 26) as u8)
            .collect()
    };
    let (l70k, l1m) = (line(70_000, 1), line(1 << 20, 2));
    let mut input = b"short\n".to_vec();
    for l in [&l70k, &l1m] {
        input.extend_from_slice(l);
        input.push(b'\n');
    }
    input.extend_from_slice(b"after\n");
    let out = run_on(&[&cap.dest()], &input);
    assert!(out.status.success());
    let mut fragments = 0;
    let mut all = Vec::new();
    loop {
        let raw = next_raw(&cap);
        assert!(raw.len() <= 1400, "a datagram of {} bytes", raw.len());
        let got = decode(&raw);
        fragments += usize::from(matches!(got, Got::Fragment { .. }));
        let end = matches!(got, Got::End { .. });
        all.push(got);
        if end {
            break;
        }
    }
    let lines = lines_of(&all);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[&1], (0, b"short".to_vec()));
    assert_eq!(lines[&2], (0, l70k));
    assert_eq!(lines[&3], (0, l1m));
    assert_eq!(lines[&4], (0, b"after".to_vec()));
    assert!(
        fragments > (70_000 + (1 << 20)) / 1400,
        "{fragments} fragments"
    );
}

#[test]
fn max_line_cuts_into_continuations() {
    let cap = UdpCapture::bind();
    let long: Vec<u8> = (0..2500).map(|i| b'0' + (i % 10) as u8).collect();
    let mut input = long.clone();
    input.extend_from_slice(b"\nnext\n");
    let out = run_on(&["--max-line", "1000", &cap.dest()], &input);
    assert!(out.status.success());
    let lines = lines_of(&until_end(&cap));
    let got: Vec<(u8, Vec<u8>)> = lines.into_values().collect();
    assert_eq!(
        got,
        vec![
            (LINE_PARTIAL, long[..1000].to_vec()),
            (LINE_PARTIAL | LINE_CONTINUATION, long[1000..2000].to_vec()),
            (LINE_CONTINUATION, long[2000..].to_vec()),
            (0, b"next".to_vec()),
        ]
    );
}

#[test]
fn bytes_pass_unchanged() {
    let cap = UdpCapture::bind();
    let odd: [&[u8]; 5] = [
        b"nul\0inside",
        b"crlf\r",
        b"\r\r\r",
        b"latin1 \xe9t\xe9 \xff\xfe\x80",
        b"",
    ];
    let mut input = Vec::new();
    for l in odd {
        input.extend_from_slice(l);
        input.push(b'\n');
    }
    assert!(run_on(&[&cap.dest()], &input).status.success());
    let lines = lines_of(&until_end(&cap));
    let got: Vec<Vec<u8>> = lines.into_values().map(|(_, t)| t).collect();
    assert_eq!(got, odd.map(<[u8]>::to_vec));
}

#[test]
fn partial_line_goes_after_the_flush_delay_and_at_eof() {
    let cap = UdpCapture::bind();
    let (mut child, mut stdin) = spawn_send(&["--flush-after", "200ms", &cap.dest()]);
    assert!(matches!(next(&cap), Got::Hello { .. }));
    stdin.write_all(b"abc").unwrap();
    let written = Instant::now();
    assert_eq!(
        next(&cap),
        Got::Lines(vec![(1, LINE_PARTIAL, b"abc".to_vec())])
    );
    assert!(written.elapsed() >= Duration::from_millis(200));
    stdin.write_all(b"def\nghi").unwrap();
    assert_eq!(
        next(&cap),
        Got::Lines(vec![(2, LINE_CONTINUATION, b"def".to_vec())])
    );
    drop(stdin);
    assert_eq!(
        until_end(&cap),
        vec![
            Got::Lines(vec![(3, LINE_PARTIAL, b"ghi".to_vec())]),
            Got::End {
                seq: 3,
                reason: EndReason::Eof
            }
        ]
    );
    assert!(wait_output(&mut child).status.success());
}

#[test]
fn heartbeats_come_while_idle() {
    let cap = UdpCapture::bind();
    let (mut child, mut stdin) = spawn_send(&["--heartbeat", "100ms", &cap.dest()]);
    stdin.write_all(b"one\ntwo\n").unwrap();
    let mut heartbeats = Vec::new();
    while heartbeats.len() < 3 {
        match next(&cap) {
            Got::Heartbeat { seq } => heartbeats.push(seq),
            Got::Hello { .. } | Got::Lines(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // The line count, unless the first came between HELLO and the lines.
    assert_eq!(heartbeats[1..], [2, 2]);
    drop(stdin);
    assert_eq!(
        until_end(&cap).last(),
        Some(&Got::End {
            seq: 2,
            reason: EndReason::Eof
        })
    );
    assert!(wait_output(&mut child).status.success());
}

/// A heartbeat is due `--heartbeat` after the last datagram of any kind, so lines
/// every 50 ms leave no room for one. Heartbeats that do come (a stalled machine
/// can delay the writer) must follow at least half the period of silence.
#[test]
fn no_heartbeat_while_lines_flow() {
    const PERIOD: Duration = Duration::from_millis(400);
    const LINES: usize = 30;
    let cap = UdpCapture::bind();
    let (mut child, mut stdin) = spawn_send(&["--heartbeat", "400ms", &cap.dest()]);
    let writer = std::thread::spawn(move || {
        for i in 0..LINES {
            std::thread::sleep(Duration::from_millis(50));
            writeln!(stdin, "line {i}").unwrap();
        }
        stdin
    });
    let mut last_arrival: Option<Instant> = None;
    let mut lines = 0;
    let mut heartbeat_gaps = Vec::new();
    while lines < LINES {
        let got = next(&cap);
        let now = Instant::now();
        match got {
            Got::Lines(l) => lines += l.len(),
            Got::Heartbeat { .. } => {
                heartbeat_gaps.push(now - last_arrival.expect("HELLO came first"));
            }
            Got::Hello { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
        last_arrival = Some(now);
    }
    drop(writer.join().unwrap());
    let early = heartbeat_gaps.iter().filter(|g| **g < PERIOD / 2).count();
    assert_eq!(
        early,
        0,
        "{early} of {} heartbeats came less than {:?} after the datagram before them, \
         with lines every 50 ms (heartbeat every {PERIOD:?}); the first gaps: {:?}",
        heartbeat_gaps.len(),
        PERIOD / 2,
        &heartbeat_gaps[..heartbeat_gaps.len().min(5)]
    );
    assert!(wait_output(&mut child).status.success());
}

#[test]
fn wrapped_command_status_is_the_exit_status() {
    let cap = UdpCapture::bind();
    let script = "echo out; echo err >&2; exit 3";
    let mut child = ncu_send(&[&cap.dest(), "--", "sh", "-c", script])
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    let all = until_end(&cap);
    assert!(matches!(&all[0], Got::Hello { source, .. } if source == &format!("sh -c {script}")));
    let mut texts: Vec<Vec<u8>> = lines_of(&all).into_values().map(|(_, t)| t).collect();
    texts.sort();
    assert_eq!(texts, [b"err".to_vec(), b"out".to_vec()]);
    assert_eq!(
        all.last(),
        Some(&Got::End {
            seq: 2,
            reason: EndReason::Exit(3)
        })
    );

    let cap = UdpCapture::bind();
    let status = ncu_send(&[&cap.dest(), "--", "sh", "-c", "kill -9 $$"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(128 + 9));
    assert_eq!(
        until_end(&cap).last(),
        Some(&Got::End {
            seq: 0,
            reason: EndReason::CommandSignal(9)
        })
    );
}

#[test]
fn command_stdout_and_stderr_lines_stay_whole() {
    let cap = UdpCapture::bind();
    let script = "i=0; while [ $i -lt 300 ]; do \
                  echo \"out $i ooooooooooooooooooooooooooooooooooooooooooooooooooooooo\"; \
                  echo \"err $i eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee\" >&2; \
                  i=$((i+1)); done";
    let status = ncu_send(&[&cap.dest(), "--", "sh", "-c", script])
        .status()
        .unwrap();
    assert!(status.success());
    let mut got: Vec<String> = lines_of(&until_end(&cap))
        .into_values()
        .map(|(flags, t)| {
            assert_eq!(flags, 0);
            String::from_utf8(t).unwrap()
        })
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..300)
        .flat_map(|i| {
            [
                format!("out {i} {}", "o".repeat(55)),
                format!("err {i} {}", "e".repeat(55)),
            ]
        })
        .collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn a_refusing_destination_never_stops_it() {
    let cap = UdpCapture::bind_v4();
    // A port nothing listens on: ICMP port unreachable, ECONNREFUSED on the next send.
    let closed = UdpCapture::bind_v4();
    let refusing = closed.dest();
    drop(closed);
    let (mut child, mut stdin) = spawn_send(&["-v", &refusing, &cap.dest()]);
    assert!(matches!(next(&cap), Got::Hello { .. }));
    for i in 1..=20u64 {
        writeln!(stdin, "line {i}").unwrap();
        assert_eq!(
            next(&cap),
            Got::Lines(vec![(i, 0, format!("line {i}").into_bytes())])
        );
    }
    drop(stdin);
    assert!(matches!(
        until_end(&cap).last(),
        Some(Got::End { seq: 20, .. })
    ));
    let out = wait_output(&mut child);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused="), "{stderr}");
}

#[test]
fn an_unreachable_destination_never_stops_it() {
    // A network namespace of its own, where loopback is down: every send fails
    // with ENETUNREACH.
    let probe = Command::new("unshare").args(["-n", "true"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: `unshare -n` is not permitted here");
        return;
    }
    let input: String = (1..=100).map(|i| format!("line {i}\n")).collect();
    let mut child = Command::new("unshare")
        .arg("-n")
        .arg(bin_path("ncu-send"))
        .args(["-v", "--no-pack", "127.0.0.1:6666", "[::1]:6666"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = wait_output(&mut child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("100 lines"), "{stderr}");
    assert!(stderr.contains("unreachable="), "{stderr}");
}

#[test]
fn sigkill_mid_stream_leaves_every_line_read_sent() {
    let cap = UdpCapture::bind();
    let (mut child, mut stdin) = spawn_send(&[&cap.dest()]);
    let lines: Vec<String> = (1..=5000)
        .map(|i| format!("{i} {}", "k".repeat(i % 150)))
        .collect();
    for chunk in lines.chunks(250) {
        stdin
            .write_all((chunk.join("\n") + "\n").as_bytes())
            .unwrap();
    }
    // Stdin stays open (mid-stream). Once the pipe is empty and ncu-send sleeps in
    // poll, it has read everything: kill it.
    let pid = child.id();
    assert!(wait_until(TIMEOUT, || pipe_unread(&stdin) == 0
        && process_state(pid) == Some('S')));
    child.kill().unwrap();
    child.wait().unwrap();
    let mut all = Vec::new();
    while lines_of(&all).len() < lines.len() {
        all.push(next(&cap));
    }
    let got: Vec<Vec<u8>> = lines_of(&all).into_values().map(|(_, t)| t).collect();
    assert_eq!(
        got,
        lines
            .iter()
            .map(|l| l.as_bytes().to_vec())
            .collect::<Vec<_>>()
    );
}

#[test]
fn sigterm_sends_what_was_read_then_end() {
    signal_sends_what_was_read_then_end(libc::SIGTERM);
}

/// A closed terminal (SIGHUP) is a clean end too: END names it, never a death.
#[test]
fn sighup_sends_what_was_read_then_end() {
    signal_sends_what_was_read_then_end(libc::SIGHUP);
}

fn signal_sends_what_was_read_then_end(sig: libc::c_int) {
    let cap = UdpCapture::bind();
    let (mut child, mut stdin) = spawn_send(&["--flush-after", "1h", &cap.dest()]);
    assert!(matches!(next(&cap), Got::Hello { .. }));
    stdin.write_all(b"whole\npartial").unwrap();
    assert_eq!(next(&cap), Got::Lines(vec![(1, 0, b"whole".to_vec())]));
    assert!(wait_until(TIMEOUT, || pipe_unread(&stdin) == 0));
    // SAFETY: kill takes a pid and a signal.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(
        until_end(&cap),
        vec![
            Got::Lines(vec![(2, LINE_PARTIAL, b"partial".to_vec())]),
            Got::End {
                seq: 2,
                reason: EndReason::Signal(sig)
            }
        ]
    );
    assert_eq!(wait_output(&mut child).status.code(), Some(128 + sig));
}

/// SIGTERM to ncu-send running COMMAND goes to COMMAND (which ends of it: END says
/// so, and the status is 128+15); COMMAND starts with no signal blocked, though
/// ncu-send blocks SIGINT and SIGTERM outside its wait; a second SIGTERM stops
/// ncu-send itself even when COMMAND ignores the first.
#[test]
fn sigterm_goes_to_the_command_which_starts_with_no_signal_blocked() {
    // Not through sh, which clears the mask itself.
    let cap = UdpCapture::bind();
    let status = ncu_send(&[&cap.dest(), "--", "grep", "SigBlk", "/proc/self/status"])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        lines_of(&until_end(&cap)).into_values().collect::<Vec<_>>(),
        [(0, b"SigBlk:\t0000000000000000".to_vec())]
    );

    let cap = UdpCapture::bind();
    let script = "echo ready; exec sleep 30";
    let mut child = ncu_send(&[&cap.dest(), "--", "sh", "-c", script])
        .spawn()
        .unwrap();
    assert!(matches!(next(&cap), Got::Hello { .. }));
    assert_eq!(next(&cap), Got::Lines(vec![(1, 0, b"ready".to_vec())]));
    // SAFETY: kill takes a pid and a signal.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(128 + 15));
    assert_eq!(
        until_end(&cap).last(),
        Some(&Got::End {
            seq: 1,
            reason: EndReason::CommandSignal(libc::SIGTERM)
        })
    );

    let cap = UdpCapture::bind();
    // A command that only says it got the signal (and gives up after 10 s).
    let script = "trap 'echo got TERM' TERM; echo $$; for i in $(seq 200); do sleep 0.05; done";
    let mut child = ncu_send(&[&cap.dest(), "--", "sh", "-c", script])
        .spawn()
        .unwrap();
    assert!(matches!(next(&cap), Got::Hello { .. }));
    let Got::Lines(first) = next(&cap) else {
        panic!("no line")
    };
    let deaf: libc::pid_t = String::from_utf8_lossy(&first[0].2).parse().unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(next(&cap), Got::Lines(vec![(2, 0, b"got TERM".to_vec())]));
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(128 + 15));
    // SAFETY: as above; the command outlives ncu-send by design.
    unsafe { libc::kill(deaf, libc::SIGKILL) };
    assert_eq!(
        until_end(&cap).last(),
        Some(&Got::End {
            seq: 2,
            reason: EndReason::Signal(libc::SIGTERM)
        })
    );
}

#[test]
fn a_bad_dest_is_a_usage_error_naming_it() {
    for bad in [
        "no-such-host.invalid:6666",
        "127.0.0.1",
        "127.0.0.1:99999",
        "::1:5",
    ] {
        let out = ncu_send(&["127.0.0.1:6666", bad])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(bad), "{stderr}");
    }
    let out = ncu_send(&["--flush-after", "soon", "127.0.0.1:6666"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn several_dests_and_copies_get_every_datagram() {
    let (a, b) = (UdpCapture::bind(), UdpCapture::bind_v4());
    let out = run_on(&["--copies", "2", &a.dest(), &b.dest()], b"one\ntwo\n");
    assert!(out.status.success());
    for cap in [&a, &b] {
        let all = until_end(cap);
        // HELLO, DATA and END twice each, END's first copy ending `until_end`.
        assert_eq!(all.len(), 5, "{all:?}");
        assert_eq!(all[0], all[1]);
        assert_eq!(all[2], all[3]);
        assert_eq!(lines_of(&all[2..3]).len(), 2);
        assert_eq!(next(cap), all[4]);
    }
}

#[test]
fn tee_copies_input_and_a_closed_stdout_does_not_stop_sending() {
    let cap = UdpCapture::bind();
    let input: String = (1..=3000).map(|i| format!("tee line {i}\n")).collect();
    let mut child = ncu_send(&["--tee", &cap.dest()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.clone();
    let writer = std::thread::spawn(move || stdin.write_all(data.as_bytes()));
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 9];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    assert_eq!(&first, b"tee line ");
    drop(stdout);
    writer.join().unwrap().unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(lines_of(&until_end(&cap)).len(), 3000);
}

#[test]
fn strace_can_pipe_into_it() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("skipped: no strace");
        return;
    }
    let cap = UdpCapture::bind();
    let pipe = format!("|{} {}", bin_path("ncu-send").display(), cap.dest());
    let status = Command::new("strace")
        .args(["-o", &pipe, "true"])
        .status()
        .unwrap();
    assert!(status.success());
    let lines = lines_of(&until_end(&cap));
    assert!(
        lines.values().any(|(_, t)| t.starts_with(b"execve(")),
        "{lines:?}"
    );
}
