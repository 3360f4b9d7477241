//! What an idle session costs (issue 17): a fleet of 65,536 hosts, each one
//! extended netconsole record, then quiet. Heap bytes counted by a counting
//! allocator, per session, beside the last line's text every session keeps.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use ncu_proto::reassembler::{Config, Reassembler};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn an_idle_session_costs_little() {
    const HOSTS: u32 = 65_536;
    let base = Instant::now();
    let config = Config {
        max_sessions: 70_000,
        ..Config::default()
    };
    // Counted from before the reassembler exists: its table, sized for the
    // session limit at the start, is part of what the sessions cost.
    let before = LIVE.load(Ordering::Relaxed);
    let mut rx = Reassembler::new(config, base);
    let text = "ncu-bench host record ...................................................";
    for h in 0..HOSTS {
        let from = SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(127, 1 + (h >> 16) as u8, (h >> 8) as u8, h as u8),
            6665,
        ));
        let record = format!("6,{h},1000,-;{text}\n");
        rx.handle_datagram(base, 1_700_000_000_000_000, from, record.as_bytes());
        while rx.poll_event().is_some() {}
    }
    // Everything due (timers) done, events taken: the sessions are idle.
    let later = base + Duration::from_secs(1);
    rx.handle_timeout(later, 1_700_000_001_000_000);
    while rx.poll_event().is_some() {}
    let after = LIVE.load(Ordering::Relaxed);
    let per = (after - before) as usize / HOSTS as usize;
    eprintln!(
        "{HOSTS} idle sessions: {} KiB of heap, {per} bytes each ({} of them the last line's text)",
        (after - before) / 1024,
        text.len()
    );
    assert_eq!(rx.session_count(), HOSTS as usize);
    // Issue 17 asks for 256 bytes beyond the text; this guards what is reached so
    // far (2,509 before the table held its sessions boxed and an idle assembler and
    // a one-session source gave back their spare room; 1,333 after; 772 once what
    // an in-order session does not use moved into a box of its own, given back when
    // empty, and a kernel session kept an assembler only while fragments are being
    // rebuilt; 636 once a source with one session idle kept no allocation in the
    // budget and session keys took 24 bytes instead of 40; 556 once a source kept
    // 24 bytes in the budget, keyed by 16; 512 once the timers and the recency
    // queue kept their times in 8 and 4 bytes instead of 16; 428 once sessions
    // lived in slots found through an index of 4-byte slots; 372 once a session
    // kept who it is without an Arc and a name of its own; 308 once a one-session
    // source had no entry in the budget; 292 with one boxed assembler; 276 once
    // retirement walked the sessions instead of keeping a recency queue; 260 with
    // the last heard time as a tick and the first number without an Option; 236
    // once who a session is took 40 bytes; 216 with the last line's sent time
    // beside a flag, 12-byte timer entries and the lost count beside the lost
    // ranges).
    assert!(per <= 224 + text.len(), "{per} bytes per idle session");
}
