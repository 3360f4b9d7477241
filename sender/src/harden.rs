//! Opt-in hardening for machines under memory pressure: `--mlock`, `--oom-protect`.
//! Neither is fatal: when not permitted, one clear line on standard error, and on.

use std::fs;
use std::io;

/// Locks every current and future page in memory (`mlockall`), so that ncu-send is
/// not paged out while the machine thrashes on its way to an out-of-memory crash.
pub(crate) fn lock_memory() {
    // SAFETY: mlockall takes flags only.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        let err = io::Error::last_os_error();
        eprintln!(
            "ncu-send: --mlock: cannot lock memory ({err}); going on without it \
             (needs CAP_IPC_LOCK or a large enough `ulimit -l`)"
        );
    }
}

const OOM_SCORE_ADJ: &str = "/proc/self/oom_score_adj";
const OOM_MIN: i32 = -1000;

/// Sets `/proc/self/oom_score_adj` to -1000, or to the lowest value permitted.
/// Call it after COMMAND was started: the score is inherited.
pub(crate) fn protect_from_oom_killer() {
    let current = fs::read_to_string(OOM_SCORE_ADJ)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let Some(current) = current else {
        eprintln!("ncu-send: --oom-protect: cannot read {OOM_SCORE_ADJ}; going on without it");
        return;
    };
    let set = |value: i32| fs::write(OOM_SCORE_ADJ, value.to_string());
    let err = match set(OOM_MIN) {
        Ok(()) => return,
        Err(err) => err,
    };
    // Unprivileged, a process may lower its score only down to a floor it cannot read:
    // find the lowest value accepted between -1000 (refused) and the current one.
    let (mut refused, mut accepted) = (OOM_MIN, current);
    while accepted - refused > 1 {
        let mid = refused + (accepted - refused) / 2;
        if set(mid).is_ok() {
            accepted = mid;
        } else {
            refused = mid;
        }
    }
    eprintln!(
        "ncu-send: --oom-protect: cannot set oom_score_adj to {OOM_MIN} ({err}); \
         using {accepted}, the lowest permitted (needs CAP_SYS_RESOURCE)"
    );
}
