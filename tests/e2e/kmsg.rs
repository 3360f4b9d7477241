//! `ncu-send --kmsg` on this machine (as root): its errors, and a DEST name that
//! resolves only after it started. The kernel's own behaviour (overruns, restart,
//! early boot) is proven in the crash lab (`kernel_lab::kmsg`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ncu_tests::{bin_path, scratch, RecvProcess};

const TIMEOUT: Duration = Duration::from_secs(15);

fn run(args: &[&str]) -> std::process::Output {
    Command::new(bin_path("ncu-send"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ncu-send")
}

#[test]
fn a_missing_kernel_log_is_one_line_and_status_1() {
    let out = run(&[
        "--kmsg",
        "--kmsg-device",
        "/nonexistent/kmsg",
        "127.0.0.1:9",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("/nonexistent/kmsg") && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn usage_errors_of_kmsg_are_status_2() {
    for args in [
        &["--kmsg", "127.0.0.1:9", "--", "true"][..],
        &["--kmsg", "--tee", "127.0.0.1:9"],
        &["--kmsg", "--kmsg-level", "8", "127.0.0.1:9"],
        &["--kmsg", "--kmsg-from", "yesterday", "127.0.0.1:9"],
        &["--kmsg-level", "3", "127.0.0.1:9"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}

/// Not allowed to read the kernel log (an unprivileged user with
/// kernel.dmesg_restrict=1, set for the test when it is not): one line that says
/// why and what to do, exit status 1.
#[test]
fn an_unprivileged_user_gets_one_line_naming_the_fix() {
    let out = with_dmesg_restrict("1", || {
        Command::new("setpriv")
            .args(NOBODY)
            .arg(bin_path("ncu-send"))
            .args(["--kmsg", "127.0.0.1:9"])
            .stdin(Stdio::null())
            .output()
            .expect("setpriv (util-linux)")
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/dev/kmsg") && err.contains("root"), "{err}");
}

/// setpriv's arguments for running as nobody.
const NOBODY: [&str; 5] = ["--reuid", "65534", "--regid", "65534", "--clear-groups"];

/// Runs `f` with kernel.dmesg_restrict set to `value` (as root), then puts it back;
/// one test at a time.
fn with_dmesg_restrict<T>(value: &str, f: impl FnOnce() -> T) -> T {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let sysctl = "/proc/sys/kernel/dmesg_restrict";
    let before = std::fs::read_to_string(sysctl).expect("dmesg_restrict");
    if before.trim() != value {
        std::fs::write(sysctl, value).expect("set dmesg_restrict (as root)");
    }
    let out = f();
    if before.trim() != value {
        let _ = std::fs::write(sysctl, before.trim());
    }
    out
}

/// `--netconsole` not as root (a user allowed to read the kernel log,
/// kernel.dmesg_restrict=0): one line saying so, and `--kmsg` shipping goes on.
#[test]
fn netconsole_not_as_root_is_one_line_and_kmsg_goes_on() {
    let recv = RecvProcess::spawn(&["--json"]);
    let marker = format!("ncu-test-netconsole-nobody {}", std::process::id());
    let (first, line, rest) = with_dmesg_restrict("0", || {
        let mut sender = Command::new("setpriv")
            .args(NOBODY)
            .arg(bin_path("ncu-send"))
            .args([
                "--kmsg",
                "--kmsg-from",
                "now",
                "--netconsole",
                "--name",
                "nobody",
            ])
            .arg(recv.addr.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("setpriv (util-linux)");
        let mut stderr = std::io::BufReader::new(sender.stderr.take().expect("stderr"));
        let mut first = String::new();
        std::io::BufRead::read_line(&mut stderr, &mut first).expect("ncu-send's line");
        std::fs::write("/dev/kmsg", format!("<5>{marker}\n")).expect("write /dev/kmsg");
        let (_, line) = recv.wait_json(TIMEOUT, |e| {
            e["event"] == "line" && e["text"].as_str() == Some(marker.as_str())
        });
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(sender.id() as libc::pid_t, libc::SIGTERM) };
        let _ = sender.wait();
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        (first, line, rest)
    });
    assert!(
        first.starts_with("ncu-send: netconsole: not root: ")
            && first.trim_end().ends_with("shipping with --kmsg goes on"),
        "{first}"
    );
    assert_eq!(line["sender"], "nobody", "{line}");
    assert!(!rest.contains("netconsole"), "one line only: {rest}");
}

/// A DEST name that does not resolve at start (a resolver not up yet early in boot)
/// is retried in the background: records read meanwhile wait in the resend ring and
/// arrive once it resolves. The name is added to a private /etc/hosts (a mount
/// namespace of the sender's own) while ncu-send runs.
#[test]
fn a_dest_name_that_resolves_later_gets_the_records_read_before() {
    let dir = scratch("kmsg-resolve");
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").expect("hosts");
    let recv = RecvProcess::spawn(&["--json"]);
    let port = recv.addr.port();
    let name = format!("ncu-late-{}.invalid", std::process::id());
    let script = format!(
        "mount --bind {} /etc/hosts && exec {} --kmsg --kmsg-from now --name late {name}:{port}",
        hosts.display(),
        bin_path("ncu-send").display()
    );
    let mut sender = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux)");
    let mut stderr = std::io::BufReader::new(sender.stderr.take().expect("stderr"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut first).expect("ncu-send's first line");
    assert!(first.contains("does not resolve yet"), "{first}");
    // A record written while the name does not resolve.
    let marker = format!("ncu-test-resolve {}", std::process::id());
    std::fs::write("/dev/kmsg", format!("<5>{marker}\n")).expect("write /dev/kmsg");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.1 {name}\n")).expect("hosts");
    let started = Instant::now();
    let (_, line) = recv.wait_json(TIMEOUT, |e| {
        e["event"] == "line" && e["text"].as_str() == Some(marker.as_str())
    });
    assert_eq!(line["sender"], "late", "{line}");
    assert!(line["kernel"]["seq"].is_u64(), "{line}");
    let mut resolved = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut resolved).expect("the resolved line");
    assert!(resolved.contains("resolved to 127.0.0.1"), "{resolved}");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(sender.id() as libc::pid_t, libc::SIGTERM) };
    let status = sender.wait().expect("wait ncu-send");
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status}");
    let (events, _) = recv.stop_json();
    let lost: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "gap" && e["kind"] == "lost")
        .collect();
    assert!(lost.is_empty(), "nothing lost: {lost:?}");
    eprintln!("resolved and delivered within {:?}", started.elapsed());
}

/// `--netconsole` towards a destination it cannot serve (loopback: netconsole
/// needs an Ethernet device): one line on stderr, and `--kmsg` shipping goes on.
#[test]
fn netconsole_on_a_path_it_cannot_use_is_one_line_and_kmsg_goes_on() {
    let recv = RecvProcess::spawn(&["--json"]);
    let mut sender = Command::new(bin_path("ncu-send"))
        .args([
            "--kmsg",
            "--kmsg-from",
            "now",
            "--netconsole",
            "--name",
            "nc-lo",
        ])
        .arg(recv.addr.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ncu-send");
    let mut stderr = std::io::BufReader::new(sender.stderr.take().expect("stderr"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut first).expect("ncu-send's line");
    assert!(
        first.starts_with("ncu-send: netconsole: ")
            && first.contains("shipping with --kmsg goes on"),
        "{first}"
    );
    let marker = format!("ncu-test-netconsole-lo {}", std::process::id());
    std::fs::write("/dev/kmsg", format!("<5>{marker}\n")).expect("write /dev/kmsg");
    let (_, line) = recv.wait_json(TIMEOUT, |e| {
        e["event"] == "line" && e["text"].as_str() == Some(marker.as_str())
    });
    assert_eq!(line["sender"], "nc-lo", "{line}");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(sender.id() as libc::pid_t, libc::SIGTERM) };
    let status = sender.wait().expect("wait");
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    assert!(!rest.contains("netconsole"), "one line only: {rest}");
}
