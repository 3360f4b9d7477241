//! The input every benchmark uses: a deterministic dmesg-like log.

use std::io::Write;

/// A deterministic dmesg-like log: `[ seconds.micros] subsystem: words`, lines of 60
/// to 180 bytes (120 on average, about 24 MB for 200,000 lines).
pub(crate) fn dmesg_like(lines: usize) -> Vec<u8> {
    const SUBSYSTEMS: [&str; 8] = [
        "usb 1-1",
        "EXT4-fs (vda1)",
        "virtio_net virtio0",
        "audit",
        "systemd[1]",
        "nvme nvme0",
        "e1000e 0000:00:1f.6 eth0",
        "kernel",
    ];
    const WORDS: [&str; 16] = [
        "device",
        "reset",
        "high-speed",
        "using",
        "mounted",
        "filesystem",
        "with",
        "ordered",
        "data",
        "mode",
        "link",
        "up",
        "0x0000ffff",
        "irq",
        "status",
        "ok",
    ];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut out = Vec::with_capacity(lines * 122);
    for i in 0..lines {
        let target = 60 + (next() % 121) as usize;
        let start = out.len();
        let us = i as u64 * 1_357;
        write!(
            out,
            "[{:>5}.{:06}] {}: ",
            us / 1_000_000,
            us % 1_000_000,
            SUBSYSTEMS[(next() % 8) as usize]
        )
        .expect("writing to a Vec");
        while out.len() - start < target {
            out.extend_from_slice(WORDS[(next() % 16) as usize].as_bytes());
            out.push(b' ');
        }
        out.truncate(start + target);
        out.push(b'\n');
    }
    out
}
