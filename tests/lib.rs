//! Helpers shared by the end-to-end tests: finding the binaries, spawning them,
//! reading their JSON output.
//!
//! Tests use loopback addresses only.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where a binary of the workspace is: `$NCU_BIN_DIR/NAME` when `NCU_BIN_DIR` is set,
/// else beside the test executable's `deps` directory (`target/<profile>/NAME`).
/// Build the binaries into the same target directory before running the tests.
///
/// # Panics
/// When the binary is not there, with a message that says how to build it.
pub fn bin_path(name: &str) -> PathBuf {
    let dir = match std::env::var_os("NCU_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("the test executable's path");
            let mut dir = exe
                .parent()
                .expect("the test executable's directory")
                .to_owned();
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build it first (cargo build --workspace, same profile and target \
         directory as the tests) or set NCU_BIN_DIR",
        path.display()
    );
    path
}

/// Receive buffer asked for by [`UdpCapture`]: bursts of a 1 MiB line fit.
const CAPTURE_RCVBUF: libc::c_int = 16 << 20;

/// A plain UDP socket on loopback ([::1], or 127.0.0.1 without IPv6) that a test
/// reads datagrams from, with a large receive buffer so that bursts are not dropped.
#[derive(Debug)]
pub struct UdpCapture {
    socket: UdpSocket,
}

impl UdpCapture {
    /// Binds a free port on IPv6 loopback, falling back to IPv4 loopback.
    pub fn bind() -> UdpCapture {
        let socket = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0))
            .or_else(|_| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)))
            .expect("a UDP socket on loopback");
        UdpCapture::from_socket(socket)
    }

    /// Binds a free port on IPv4 loopback.
    pub fn bind_v4() -> UdpCapture {
        UdpCapture::from_socket(
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a UDP socket on 127.0.0.1"),
        )
    }

    fn from_socket(socket: UdpSocket) -> UdpCapture {
        set_rcvbuf(&socket, CAPTURE_RCVBUF);
        UdpCapture { socket }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("a bound socket")
    }

    /// The address as a command-line DEST: `127.0.0.1:PORT` or `[::1]:PORT`.
    pub fn dest(&self) -> String {
        self.addr().to_string()
    }

    /// The next datagram, or `None` when none came within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        recv_from(&self.socket, timeout).map(|(_, bytes)| bytes)
    }
}

/// The next datagram on `socket` within `timeout`: where it came from and its bytes.
pub fn recv_from(socket: &UdpSocket, timeout: Duration) -> Option<(SocketAddr, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        socket
            .set_read_timeout(Some(left))
            .expect("a positive timeout");
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                buf.truncate(n);
                return Some((from, buf));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// Gives a test's UDP socket a 16 MiB receive buffer (beyond `rmem_max` when
/// permitted), so that a burst from a sender is not dropped by the test's own socket
/// while the test thread is busy.
pub fn big_rcvbuf(socket: &UdpSocket) {
    set_rcvbuf(socket, CAPTURE_RCVBUF);
}

/// Sets `SO_RCVBUF`, beyond `rmem_max` when permitted (`SO_RCVBUFFORCE`).
pub fn set_rcvbuf(socket: &UdpSocket, bytes: libc::c_int) {
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: a valid socket and a c_int option value of the size given.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// Checks `condition` until it holds (true) or `timeout` passed (false). For
/// conditions no descriptor can be waited on for (a process's state, a file).
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The state letter of process `pid` from `/proc/PID/stat` (`R`, `S`, `Z`, ...).
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: the state follows
    // the last ')'.
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Starts `ncu-send ARGS...` reading a pipe from the test: stdout discarded, stderr
/// piped (read it after [`await_exit`]).
pub fn spawn_send(args: &[&str]) -> (std::process::Child, std::process::ChildStdin) {
    let mut child = std::process::Command::new(bin_path("ncu-send"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ncu-send starts");
    let stdin = child.stdin.take().expect("piped stdin");
    (child, stdin)
}

/// Waits until `child` has exited (without reaping it), or kills it and fails the
/// test after `timeout`.
pub fn await_exit(child: &mut std::process::Child, timeout: Duration) {
    let pid = child.id();
    if !wait_until(
        timeout,
        || !matches!(process_state(pid), Some(s) if s != 'Z'),
    ) {
        let _ = child.kill();
        panic!("ncu-send did not exit within {timeout:?}");
    }
}

/// Bytes written into a pipe and not yet read by the other end (`FIONREAD`).
pub fn pipe_unread(pipe: &impl AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int.
    let rc = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD: {}", io::Error::last_os_error());
    n as usize
}

// ---- ncu-recv helpers (receiver tests) ----

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;

use ncu_proto::framer::{Framer, Outbox};
use ncu_proto::wire::EndReason;

/// Microseconds since the Unix epoch.
pub fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A running `ncu-recv`, its standard output read line by line by a thread.
#[derive(Debug)]
pub struct RecvProcess {
    /// The process.
    pub child: Child,
    /// Where to send to (IPv4 loopback and the port it printed).
    pub addr: SocketAddr,
    stdout: mpsc::Receiver<Vec<u8>>,
    stderr: mpsc::Receiver<String>,
}

impl RecvProcess {
    /// Starts `ncu-recv ARGS... 0` (a free port; `listen` overrides the `0`) and
    /// waits for its `listening on ADDR:PORT` line on stderr.
    pub fn spawn(args: &[&str]) -> RecvProcess {
        RecvProcess::spawn_on(args, "0")
    }

    /// Starts `ncu-recv ARGS... LISTEN`.
    pub fn spawn_on(args: &[&str], listen: &str) -> RecvProcess {
        let mut command = Command::new(bin_path("ncu-recv"));
        command.args(args).arg(listen).stdout(Stdio::piped());
        RecvProcess::spawn_command(command)
    }

    /// Starts `command`, which runs ncu-recv (e.g. through a wrapper that `exec`s it);
    /// its standard output is read only when the command's is piped.
    pub fn spawn_command(mut command: Command) -> RecvProcess {
        let mut child = command
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ncu-recv starts");
        let out = child.stdout.take();
        let err = child.stderr.take().expect("piped stderr");
        let (out_tx, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            let Some(out) = out else { return };
            let mut r = BufReader::new(out);
            loop {
                let mut line = Vec::new();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if out_tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let (err_tx, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if err_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = stderr
            .recv_timeout(Duration::from_secs(10))
            .expect("ncu-recv prints 'listening on' on stderr");
        let addr: SocketAddr = first
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {first:?}"));
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()));
        RecvProcess {
            child,
            addr,
            stdout,
            stderr,
        }
    }

    /// The next line of standard output (with its newline), or `None` after `timeout`
    /// or at end of output.
    pub fn next_line(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.stdout.recv_timeout(timeout).ok()
    }

    /// The next JSON object on standard output.
    ///
    /// # Panics
    /// When the line is not JSON.
    pub fn next_json(&self, timeout: Duration) -> Option<serde_json::Value> {
        let line = self.next_line(timeout)?;
        Some(
            serde_json::from_slice(&line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&line))),
        )
    }

    /// Reads JSON objects until one matches `want`; returns those before it and it.
    ///
    /// # Panics
    /// When none matches within `timeout`.
    pub fn wait_json(
        &self,
        timeout: Duration,
        mut want: impl FnMut(&serde_json::Value) -> bool,
    ) -> (Vec<serde_json::Value>, serde_json::Value) {
        let deadline = Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_json(left) {
                Some(v) if want(&v) => return (before, v),
                Some(v) => before.push(v),
                None => panic!("no matching event within {timeout:?}; saw {before:#?}"),
            }
        }
    }

    /// Reads JSON objects until the event named `event`.
    pub fn wait_event(
        &self,
        timeout: Duration,
        event: &str,
    ) -> (Vec<serde_json::Value>, serde_json::Value) {
        self.wait_json(timeout, |v| v["event"] == event)
    }

    /// Lines written to stderr so far (after the `listening on` line).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }

    /// Reads standard error until a line contains `needle`; that line.
    ///
    /// # Panics
    /// When none does within `timeout`.
    pub fn wait_stderr(&self, timeout: Duration, needle: &str) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line with {needle:?} on ncu-recv's stderr within {timeout:?}"),
            }
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    /// Waits for the process to exit (killing it after `timeout`).
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("ncu-recv did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then every remaining JSON object up to end of output, and the status.
    pub fn stop_json(mut self) -> (Vec<serde_json::Value>, ExitStatus) {
        self.signal(libc::SIGTERM);
        let status = self.wait(Duration::from_secs(10));
        let mut rest = Vec::new();
        while let Some(v) = self.next_json(Duration::from_secs(5)) {
            rest.push(v);
        }
        (rest, status)
    }
}

impl Drop for RecvProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Crafts one ncu session's datagrams with [`Framer`] (one line per datagram) and
/// sends the ones a test chooses: a shim that can drop, repeat and reorder.
#[derive(Debug)]
pub struct Crafter {
    /// The framer (its session id and name).
    pub framer: Framer,
    outbox: Outbox,
    socket: UdpSocket,
    dest: SocketAddr,
}

impl Crafter {
    /// A session named `name` sending to `dest` from a fresh IPv4 loopback socket.
    pub fn new(name: &str, dest: SocketAddr) -> Crafter {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a UDP socket");
        Crafter::with_socket(name, dest, socket)
    }

    /// A session sending from `socket` (same source address as another session).
    pub fn with_socket(name: &str, dest: SocketAddr, socket: UdpSocket) -> Crafter {
        let now = wall_us();
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let random =
            (now as u32) ^ std::process::id().rotate_left(16) ^ n.wrapping_mul(0x9E37_79B9);
        let secs = (now / 1_000_000) as u32;
        let session = ncu_proto::wire::session_id(secs, random);
        Crafter {
            framer: Framer::new(session, name, 1400),
            outbox: Outbox::default(),
            socket,
            dest,
        }
    }

    /// The session id as ncu-recv prints it.
    pub fn session_hex(&self) -> String {
        format!("{:016x}", self.framer.session())
    }

    fn take(&mut self) -> Vec<Vec<u8>> {
        let d = self.outbox.datagrams().map(<[u8]>::to_vec).collect();
        self.outbox.clear();
        d
    }

    /// The HELLO datagram.
    pub fn hello(&mut self) -> Vec<u8> {
        let now = wall_us();
        self.framer
            .hello(std::process::id(), now, "test", now, &mut self.outbox);
        self.take().remove(0)
    }

    /// One line in its own datagram (several datagrams when it needs fragments).
    pub fn line(&mut self, text: &[u8]) -> Vec<Vec<u8>> {
        self.framer.push_line(0, text, wall_us(), &mut self.outbox);
        self.framer.flush(&mut self.outbox);
        self.take()
    }

    /// A heartbeat datagram.
    pub fn heartbeat(&mut self) -> Vec<u8> {
        self.framer.heartbeat(wall_us(), &mut self.outbox);
        self.take().remove(0)
    }

    /// The END datagram (end of input).
    pub fn end(&mut self) -> Vec<u8> {
        self.framer.end(EndReason::Eof, wall_us(), &mut self.outbox);
        self.take().remove(0)
    }

    /// Sends one datagram.
    pub fn send(&self, datagram: &[u8]) {
        self.socket
            .send_to(datagram, self.dest)
            .expect("send on loopback");
    }

    /// Sends raw bytes from this session's socket.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }
}

/// Every file under `dir`, in its subfolders too (`--output-dir`'s
/// `DIR/<sender>/<start>-<session>.log`), sorted.
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The `--output-dir` file of session `session_hex` of sender folder `sender`.
pub fn session_file(dir: &std::path::Path, sender: &str, session_hex: &str) -> PathBuf {
    let suffix = format!("-{session_hex}.log");
    files_under(&dir.join(sender))
        .into_iter()
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&suffix))
        })
        .unwrap_or_else(|| panic!("no file of session {session_hex} under {sender}/"))
}

/// An empty scratch folder `ncu-<name>-<pid>` under the temporary directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ncu-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    dir
}
