//! Many machines' kernels on one receiver (issue 17).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use ncu_tests::RecvProcess;

/// 64 hosts sending 128,000 records as fast as they can, faster than the main loop
/// handles them, so that the receiving thread takes datagrams off the socket into
/// ncu-recv's own ring while the main loop reads the socket itself whenever it
/// waits: every record of every host arrives, none missing, none out of order
/// (the two hand over in the order received). The default 64 MiB socket buffer
/// keeps kernel drops out of it; what the ring does for a small buffer is measured
/// by bench/netconsole.sh, not asserted here.
#[test]
fn the_receiving_thread_and_the_main_loop_keep_every_record_in_order() {
    const HOSTS: u32 = 64;
    const EACH: u64 = 2_000;
    // Standard output into a file: a reader in this process would take the CPU
    // the receiver needs (2 cores: this sender, and ncu-recv's two threads).
    let dir = ncu_tests::scratch("fleet-burst");
    let out_path = dir.join("events.json");
    let mut command = std::process::Command::new(ncu_tests::bin_path("ncu-recv"));
    command
        .args(["--json", "--dead-after", "60s", "0"])
        .stdout(std::fs::File::create(&out_path).expect("the events file"));
    let mut rx = RecvProcess::spawn_command(command);
    let sockets: Vec<UdpSocket> = (0..HOSTS)
        .map(|h| {
            let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::new(127, 3, 0, h as u8 + 1), 0))
                .expect("bind a loopback address");
            s.connect(rx.addr).expect("connect");
            s
        })
        .collect();
    for seq in 0..EACH {
        for (h, s) in sockets.iter().enumerate() {
            let record = format!(
                "6,{seq},{},-;fleet host {h:03} record {seq:06} ..................................\n",
                seq * 1000
            );
            while s.send(record.as_bytes()).is_err() {}
        }
    }
    // Every record handled: as many line events in the file.
    let want = u64::from(HOSTS) * EACH;
    let counted = |text: &str| text.matches("\"event\":\"line\"").count() as u64;
    let waited = std::time::Instant::now();
    while counted(&std::fs::read_to_string(&out_path).unwrap_or_default()) < want {
        if waited.elapsed() > Duration::from_secs(20) {
            break; // the counts below say what is missing
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    rx.signal(libc::SIGTERM);
    assert!(rx.wait(Duration::from_secs(10)).success());
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&out_path)
        .expect("the events")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let summary = events
        .iter()
        .find(|v| v["event"] == "summary")
        .expect("a summary");
    let gaps = events.iter().filter(|v| v["event"] == "gap").count();
    assert_eq!(gaps, 0, "nothing missing: {summary}");
    assert_eq!(summary["kernel_drops"], 0, "{summary}");
    assert!(
        summary["ring_taken"].as_u64() > Some(0),
        "the receiving thread took some: {summary}"
    );
    assert_eq!(summary["sessions_seen"], HOSTS, "{summary}");
    let sessions = summary["sessions"].as_array().expect("sessions");
    assert!(
        sessions
            .iter()
            .all(|s| s["reordered"] == 0 && s["lost"] == 0),
        "in order, none lost: {summary}"
    );
    eprintln!(
        "{} records from {HOSTS} hosts, kernel drops 0, {} taken by the receiving thread",
        u64::from(HOSTS) * EACH,
        summary["ring_taken"]
    );
}
