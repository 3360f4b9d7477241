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
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65_536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.socket
                .set_read_timeout(Some(left))
                .expect("a positive timeout");
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return Some(buf);
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
}

/// Sets `SO_RCVBUF`, beyond `rmem_max` when permitted (`SO_RCVBUFFORCE`).
fn set_rcvbuf(socket: &UdpSocket, bytes: libc::c_int) {
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

/// Bytes written into a pipe and not yet read by the other end (`FIONREAD`).
pub fn pipe_unread(pipe: &impl AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int.
    let rc = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD: {}", io::Error::last_os_error());
    n as usize
}
