//! A child's CPU time, for the benchmarks that compare work per CPU second.

use std::process::Child;

/// Waits for `child`; its CPU time (user + sys) in seconds. Panics unless it exited 0
/// (or by the SIGTERM we sent it, when `terminated`).
pub(crate) fn wait_cpu(child: Child, terminated: bool) -> f64 {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it in for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, not yet waited for (std's Child is never waited).
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    let ok = (libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)
        || (terminated && libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGTERM);
    assert!(ok, "child {pid} ended with status {status:#x}");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
