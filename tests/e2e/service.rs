//! ncu-recv as a service: the notify socket (sd_notify), socket activation with the
//! real `systemd-socket-activate`, a restart on a held socket without loss, rotation
//! with the real `logrotate` and the shipped snippet, and durable `--output-dir`
//! files (the `fdatasync` calls, counted under `strace`).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ncu_tests::{bin_path, files_under, spawn_send, wait_until, Crafter, RecvProcess};

const T: Duration = Duration::from_secs(20);

fn scratch(name: &str) -> PathBuf {
    ncu_tests::scratch(&format!("svc-{name}"))
}

/// Notifications received, with the time each arrived.
fn notifications(socket: &UnixDatagram, until: Duration) -> Vec<(Instant, String)> {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("a timeout");
    let deadline = Instant::now() + until;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            out.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }
    out
}

/// Waits for a notification that `want` accepts, keeping every one seen in `seen`.
fn await_notification(
    socket: &UnixDatagram,
    seen: &mut Vec<(Instant, String)>,
    want: impl Fn(&str) -> bool,
) -> String {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("a timeout");
    let deadline = Instant::now() + T;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push((Instant::now(), m.clone()));
            if want(&m) {
                return m;
            }
        }
    }
    panic!("no such notification; saw {seen:#?}");
}

#[test]
fn notify_socket_gets_ready_status_watchdog_and_stopping() {
    let dir = scratch("notify");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("the notify socket");
    let mut command = Command::new(bin_path("ncu-recv"));
    command
        .args(["--json", "--dead-after", "1s", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::piped());
    let rx = RecvProcess::spawn_command(command);
    let mut seen = Vec::new();
    let ready = await_notification(&socket, &mut seen, |m| m.contains("READY=1"));
    // READY comes after the port is bound: a datagram sent now is taken.
    assert!(ready.contains("STATUS=listening on"), "{ready}");
    let mut c = Crafter::new("db-7", rx.addr);
    let hello = c.hello();
    c.send(&hello);
    for d in c.line(b"last words") {
        c.send(&d);
    }
    rx.wait_json(T, |v| v["event"] == "line");
    let status = await_notification(&socket, &mut seen, |m| m.starts_with("STATUS=1 sessions"));
    assert!(status.contains("none silent"), "{status}");
    // The sender stops: after --dead-after the status names it.
    rx.wait_json(T, |v| v["event"] == "silent");
    let silent = await_notification(&socket, &mut seen, |m| m.contains("1 silent: db-7 since"));
    assert!(silent.ends_with("; 0 lines lost"), "{silent}");
    // The watchdog keeps coming at half the interval while idle (measured while this
    // test reads the socket all the time, so arrival times are send times).
    let window = notifications(&socket, Duration::from_millis(2500));
    let pings: Vec<Instant> = window
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|&(t, _)| t)
        .collect();
    assert!(pings.len() >= 4, "{window:#?}");
    let longest = pings.windows(2).map(|w| w[1] - w[0]).max().expect("pings");
    assert!(
        longest < Duration::from_secs(1),
        "the manager would have timed out: {longest:?}"
    );
    rx.signal(libc::SIGTERM);
    await_notification(&socket, &mut seen, |m| m == "STOPPING=1");
    let mut rx = rx;
    assert!(rx.wait(T).success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A free UDP port on IPv4 loopback (bound and released: a small race, fine here).
fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("a socket");
    s.local_addr().expect("its address").port()
}

#[test]
fn socket_activation_with_systemd_socket_activate() {
    let dir = scratch("activate");
    let report = dir.join("r.md");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut command = Command::new("systemd-socket-activate");
    command
        .args(["--datagram", "-l", &listen])
        .arg(bin_path("ncu-recv"))
        .args(["--json", "--report", report.to_str().expect("UTF-8"), "0"])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("systemd-socket-activate runs");
    let stdout = child.stdout.take().expect("piped");
    let mut err = std::io::BufReader::new(child.stderr.take().expect("piped"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut err, &mut first).expect("the activator says it listens");
    assert!(first.starts_with("Listening on"), "{first}");
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let dest: std::net::SocketAddr = listen.parse().expect("an address");
    // The socket is the activator's from the start: what is sent now waits in it.
    let mut c = Crafter::new("activated", dest);
    let hello = c.hello();
    c.send(&hello);
    for i in 0..5 {
        for d in c.line(format!("line {i}").as_bytes()) {
            c.send(&d);
        }
    }
    let end = c.end();
    c.send(&end);
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let keep = lines.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            keep.lock().expect("not poisoned").push(l);
        }
    });
    assert!(
        wait_until(T, || lines
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|l| l.contains("\"event\":\"end\""))),
        "no end event"
    );
    // SAFETY: kill takes a pid and a signal; the activator execs ncu-recv in place.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().expect("it exits");
    assert!(status.success(), "{status:?}");
    let got: Vec<String> = lines
        .lock()
        .expect("not poisoned")
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "line")
        .map(|v| v["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(got, (0..5).map(|i| format!("line {i}")).collect::<Vec<_>>());
    let md = std::fs::read_to_string(&report).expect("the report");
    let kib: u64 = md
        .lines()
        .find_map(|l| l.strip_prefix("- receive buffer: "))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .expect("the receive buffer in the report");
    // As root the inherited socket gets the 64 MiB ncu-recv asks for (the kernel
    // reports twice what is set).
    assert!(kib >= 64 * 1024, "receive buffer {kib} KiB");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts ncu-recv ARGS on `socket` passed as systemd does (descriptor 3,
/// `LISTEN_FDS=1`, `LISTEN_PID` its own pid).
fn recv_on_held_socket(socket: &UdpSocket, args: &[&str]) -> RecvProcess {
    let fd = socket.as_raw_fd();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$@\" 0")
        .arg("sh")
        .arg(bin_path("ncu-recv"))
        .args(args)
        .stdout(Stdio::piped());
    // SAFETY: dup2 and fcntl are async-signal-safe; the child only execs after.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    RecvProcess::spawn_command(command)
}

fn line_texts(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|v| v["event"] == "line")
        .map(|v| v["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_restart_on_a_held_socket_loses_nothing() {
    let dir = scratch("restart");
    let out = dir.join("out");
    let out_s = out.to_str().expect("UTF-8").to_owned();
    // The holder: the socket outlives both receivers, as with ncu-recv.socket.
    let socket = UdpSocket::bind("127.0.0.1:0").expect("the held socket");
    let args = ["--json", "--output-dir", &out_s];
    let first = recv_on_held_socket(&socket, &args);
    let dest = first.addr.to_string();
    let (mut send, mut stdin) = spawn_send(&["--name", "svc", &dest]);
    const N: usize = 2000;
    let writer = std::thread::spawn(move || {
        for i in 1..=N {
            writeln!(stdin, "line {i:05}").expect("write to ncu-send");
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    // Past the first 1,500 lines (3 s: the second receiver must see a sender that
    // started well before it, or it would count the first lines as lost).
    let (mut events, _) = first.wait_json(T, |v| v["text"] == "line 01500");
    events.push(serde_json::json!({"event": "line", "text": "line 01500"}));
    let (rest, status) = first.stop_json();
    assert!(status.success());
    events.extend(rest);
    let second = recv_on_held_socket(&socket, &args);
    writer.join().expect("the writer");
    ncu_tests::await_exit(&mut send, T);
    let (more, end) = second.wait_json(T, |v| v["event"] == "end");
    events.extend(more);
    events.push(end);
    let (rest, status) = second.stop_json();
    assert!(status.success());
    events.extend(rest);
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for t in line_texts(&events) {
        *count.entry(t).or_default() += 1;
    }
    let want: Vec<String> = (1..=N).map(|i| format!("line {i:05}")).collect();
    assert_eq!(
        count.keys().cloned().collect::<Vec<_>>(),
        want,
        "every line across the two runs"
    );
    assert!(count.values().all(|&n| n == 1), "a line twice: {count:?}");
    let gaps: Vec<_> = events.iter().filter(|v| v["event"] == "gap").collect();
    assert!(gaps.is_empty(), "nothing sent is reported lost: {gaps:?}");
    let end = events.iter().find(|v| v["event"] == "end").expect("an end");
    assert_eq!(end["lost"], 0, "{end}");
    // The session's file holds every line once too, across both runs.
    let files = files_under(&out);
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).expect("the file");
    let file_lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("### ncu:"))
        .collect();
    assert_eq!(
        file_lines,
        want.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shipped logrotate snippet, pointed at `dir` and at `pid` (instead of the
/// service), as a config file for the real logrotate.
fn logrotate_config(dir: &Path, pid: u32) -> PathBuf {
    let snippet = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/logrotate/ncu-recv"),
    )
    .expect("the shipped snippet");
    assert!(snippet.contains("/var/log/ncu-recv/*/*.log"));
    let postrotate = snippet
        .lines()
        .find(|l| l.contains("systemctl kill"))
        .expect("the postrotate command");
    let conf = snippet
        .replace("/var/log/ncu-recv", dir.to_str().expect("UTF-8"))
        .replace(postrotate.trim(), &format!("kill -HUP {pid}"));
    let path = dir.join("../logrotate.conf");
    std::fs::write(&path, conf).expect("the config");
    path
}

#[test]
fn logrotate_with_the_shipped_snippet_loses_and_splits_nothing() {
    let dir = scratch("rotate");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).expect("the output folder");
    let rx = RecvProcess::spawn(&["--json", "--output-dir", out.to_str().expect("UTF-8")]);
    let conf = logrotate_config(&out, rx.child.id());
    let (mut send, mut stdin) = spawn_send(&["--name", "rot", &rx.addr.to_string()]);
    const N: usize = 1500;
    let writer = std::thread::spawn(move || {
        for i in 1..=N {
            writeln!(stdin, "line {i:05} {}", "z".repeat(40)).expect("write to ncu-send");
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    rx.wait_json(T, |v| {
        v["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("line 00500"))
    });
    let status = Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(dir.join("logrotate.state"))
        .arg(&conf)
        .status()
        .expect("logrotate runs");
    assert!(status.success(), "logrotate: {status:?}");
    writer.join().expect("the writer");
    ncu_tests::await_exit(&mut send, T);
    rx.wait_json(T, |v| v["event"] == "end");
    let (_, status) = rx.stop_json();
    assert!(status.success());
    let files = files_under(&out);
    let rotated: Vec<&PathBuf> = files
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".log.1"))
        .collect();
    let current: Vec<&PathBuf> = files
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".log"))
        .collect();
    assert_eq!((rotated.len(), current.len()), (1, 1), "{files:?}");
    let old = std::fs::read_to_string(rotated[0]).expect("the rotated file");
    let new = std::fs::read_to_string(current[0]).expect("the new file");
    let lines: Vec<String> = old
        .lines()
        .chain(new.lines())
        .filter(|l| !l.starts_with("### ncu:"))
        .map(str::to_owned)
        .collect();
    let want: Vec<String> = (1..=N)
        .map(|i| format!("line {i:05} {}", "z".repeat(40)))
        .collect();
    assert_eq!(lines, want, "the new file starts where the old one ended");
    assert!(old.ends_with('\n'), "no line split at the rotation");
    assert!(
        !new.is_empty(),
        "lines after the rotation went to the new file"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn output_dir_files_reach_the_disk_when_their_session_goes_silent() {
    let dir = scratch("durable");
    let out = dir.join("out");
    let trace = dir.join("strace.out");
    let rx = RecvProcess::spawn(&[
        "--json",
        "--dead-after",
        "1s",
        "--sync-every",
        "1h",
        "--output-dir",
        out.to_str().expect("UTF-8"),
    ]);
    // strace attached to the running receiver (detaches cleanly when stopped).
    let mut strace = Command::new("strace")
        .args(["-f", "-e", "trace=fdatasync", "-o"])
        .arg(&trace)
        .args(["-p", &rx.child.id().to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace runs");
    let mut err = std::io::BufReader::new(strace.stderr.take().expect("piped"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut err, &mut first).expect("strace says it attached");
    assert!(first.contains("attached"), "{first}");
    let syncs = || {
        std::fs::read_to_string(&trace)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("fdatasync(") && l.contains("= 0"))
            .count()
    };
    let mut c = Crafter::new("disk", rx.addr);
    let hello = c.hello();
    c.send(&hello);
    for i in 0..20 {
        for d in c.line(format!("line {i}").as_bytes()) {
            c.send(&d);
        }
    }
    rx.wait_json(T, |v| v["text"] == "line 19");
    assert_eq!(
        syncs(),
        0,
        "--sync-every 1h: nothing synced while the session streams"
    );
    rx.wait_json(T, |v| v["event"] == "silent");
    assert!(
        wait_until(T, || syncs() >= 1),
        "the file is synced when its session goes silent"
    );
    let files = files_under(&out);
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(&files[0]).expect("the file");
    assert!(
        text.contains("line 19\n") && text.contains("### ncu: silent"),
        "{text}"
    );
    // SAFETY: kill takes a pid and a signal.
    unsafe { libc::kill(strace.id() as libc::pid_t, libc::SIGTERM) };
    let _ = strace.wait();
    drop(rx);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without CAP_NET_ADMIN (here: as nobody) ncu-recv gets at most net.core.rmem_max,
/// and says so with the sysctl that raises it: on stderr, in the report and in
/// STATUS=.
#[test]
fn an_unprivileged_receiver_states_its_buffer_and_how_to_raise_it() {
    let dir = scratch("unprivileged");
    let mut perms = std::fs::metadata(&dir).expect("the folder").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o777);
    std::fs::set_permissions(&dir, perms).expect("open to nobody");
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .expect("the sysctl")
        .trim()
        .parse()
        .expect("a number");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("the notify socket");
    let mut perms = std::fs::metadata(&path).expect("the socket").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o777);
    std::fs::set_permissions(&path, perms).expect("open to nobody");
    let report = dir.join("r.md");
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin_path("ncu-recv"))
        .args([
            "--json",
            "--report",
            report.to_str().expect("UTF-8"),
            "127.0.0.1:0",
        ])
        .env("NOTIFY_SOCKET", &path)
        .stdout(Stdio::piped());
    let rx = RecvProcess::spawn_command(command);
    let mut seen = Vec::new();
    let ready = await_notification(&socket, &mut seen, |m| m.contains("READY=1"));
    assert!(ready.contains("READY=1"));
    let mut c = Crafter::new("x", rx.addr);
    let hello = c.hello();
    c.send(&hello);
    rx.wait_json(T, |v| v["event"] == "start");
    let status = await_notification(&socket, &mut seen, |m| m.starts_with("STATUS=1 sessions"));
    let stderr = rx.stderr_lines().join("\n");
    let (_, exit) = rx.stop_json();
    assert!(exit.success());
    let md = std::fs::read_to_string(&report).expect("the report");
    let hint = "sysctl -w net.core.rmem_max=67108864";
    if rmem_max * 2 < 64 << 20 {
        assert!(stderr.contains(hint), "{stderr}");
        assert!(md.contains(hint), "{md}");
        assert!(status.contains(hint), "{status}");
    } else {
        // This machine's cap already allows 64 MiB: nothing to say.
        assert!(!stderr.contains(hint) && !md.contains(hint) && !status.contains(hint));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
