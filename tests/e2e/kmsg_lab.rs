//! `ncu-send --kmsg` in the crash lab (issue 14): a real kernel's /dev/kmsg, read
//! by ncu-send inside the guest. Every kernel record between the first and the last
//! one received must be accounted for: delivered once, in order, or named as
//! overwritten (the ring dropped it before ncu-send read it), or counted as left
//! out by `--kmsg-level`. Nothing else may be missing.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{initramfs, is, lab, ncu_send_boot, of_session, static_ncu_send, summary_of, Await};

/// What one session's events say in the kernel's numbers.
#[derive(Debug, Default)]
struct Kernel {
    /// Kernel sequence number -> text, in delivery order (asserted no repeats).
    records: BTreeMap<u64, String>,
    delivered_order: Vec<u64>,
    overwritten: Vec<(u64, u64)>,
    /// Gaps of ncu lines lost on the network (not recovered).
    lost: Vec<(u64, u64)>,
}

fn kernel_of(events: &[&Value], tag: &str) -> Kernel {
    let mut k = Kernel::default();
    for e in events {
        if is(e, "line") {
            let seq = e["kernel"]["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("{tag}: a line without its kernel record: {e}"));
            let text = e["text"].as_str().unwrap_or("").to_owned();
            assert!(
                k.records.insert(seq, text).is_none(),
                "{tag}: kernel record {seq} delivered twice"
            );
            k.delivered_order.push(seq);
        } else if is(e, "gap") {
            let range = (
                e["first"].as_u64().expect("first"),
                e["last"].as_u64().expect("last"),
            );
            match e["kind"].as_str() {
                Some("overwritten") => k.overwritten.push(range),
                Some("lost") => k.lost.push(range),
                other => panic!("{tag}: unexpected gap kind {other:?}: {e}"),
            }
        }
    }
    k
}

/// Markers `prefix NNNN` delivered, by number, in delivery order.
fn markers(k: &Kernel, prefix: &str) -> Vec<u32> {
    k.delivered_order
        .iter()
        .filter_map(|seq| {
            let text = &k.records[seq];
            let rest = text.strip_prefix(prefix)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// Every kernel number from `from` to the highest delivered is delivered or named
/// overwritten, none both, and `filtered` more are left out: nothing unaccounted.
fn assert_accounted(k: &Kernel, from: u64, filtered: u64, tag: &str) {
    assert!(
        k.lost.is_empty(),
        "{tag}: lines lost on the network: {:?}",
        k.lost
    );
    assert!(
        k.delivered_order.windows(2).all(|w| w[0] < w[1]),
        "{tag}: kernel records out of order"
    );
    let last = *k.records.keys().last().expect("records delivered");
    let mut overwritten = 0;
    for &(a, b) in &k.overwritten {
        for s in a..=b {
            assert!(
                !k.records.contains_key(&s),
                "{tag}: {s} delivered and overwritten"
            );
        }
        overwritten += b - a + 1;
    }
    let delivered = k.records.range(from..).count() as u64;
    assert_eq!(
        delivered + overwritten + filtered,
        last - from + 1,
        "{tag}: kernel records {from}-{last}: {delivered} delivered + {overwritten} \
         overwritten + {filtered} filtered"
    );
}

fn session_events<'a>(events: &'a [Value], fate: &Value) -> Vec<&'a Value> {
    of_session(events, &fate["session"])
}

/// Overrun and crash: ncu-send --kmsg is stopped while 4,000 records (about three
/// times the ring) are written, then continued; markers every 20 ms after, and the
/// crash right after the last one.
#[test]
fn kernel_lab_kmsg_overrun_then_crash() {
    let tag = "kmsg-overrun";
    const MARKERS: u32 = 20;
    let (silent, events, booted) = ncu_send_boot(
        tag,
        ("kmsg", "kmsg.sh"),
        &format!("printk.devkmsg=on ncu.mode=overrun ncu.reader=kmsg ncu.markers={MARKERS}"),
        // Stopped for about two seconds, it goes silent once before it dies.
        Await::SilentQuoting("ncu-marker"),
    );
    let mine = session_events(&events, &silent);
    let k = kernel_of(&mine, tag);
    // The boot's first records: from 0, as --kmsg-from all asks.
    assert_eq!(k.records.keys().next(), Some(&0), "{tag}: record 0 missing");
    assert_accounted(&k, 0, 0, tag);
    let flood: Vec<(u64, u64)> = k
        .records
        .iter()
        .filter_map(|(s, t)| {
            Some((
                *s,
                t.strip_prefix("ncu-flood ")?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()?,
            ))
        })
        .collect();
    let overwritten: u64 = k.overwritten.iter().map(|(a, b)| b - a + 1).sum();
    assert!(overwritten > 0, "{tag}: the ring did not overrun");
    // The flood is one run of kernel numbers: flood record N is at `base + N`.
    let &(seq, n) = flood.first().expect("flood records after the overrun");
    let base = seq - n;
    assert!(
        flood.iter().all(|&(s, n)| s == base + n),
        "{tag}: flood numbering"
    );
    for n in 1..=4000u64 {
        let seq = base + n;
        let named = k.overwritten.iter().any(|&(a, b)| a <= seq && seq <= b);
        assert!(
            named != k.records.contains_key(&seq),
            "{tag}: flood record {n} (kernel {seq}) delivered or named overwritten, once"
        );
    }
    assert_eq!(
        markers(&k, "ncu-marker "),
        (1..=MARKERS).collect::<Vec<_>>(),
        "{tag}: every marker after the overrun, once, in order"
    );
    // silent names the last kernel record received (the last marker: the crash
    // came right after it; 20 ms apart, so at least the one before it).
    let last_seq = *k.delivered_order.last().expect("records");
    let last_text = &k.records[&last_seq];
    assert!(
        silent["last_text"].as_str() == Some(last_text.as_str()),
        "{tag}: silent does not quote the last record {last_seq} {last_text:?}: {silent}"
    );
    let n = markers(&k, "ncu-marker ").len() as u32;
    assert!(
        n + 1 >= MARKERS,
        "{tag}: markers before the crash missing ({n})"
    );
    let (entry, _) = summary_of(&events, &silent["session"], tag);
    assert_eq!(entry["kernel_overwritten"], overwritten, "{tag}: {entry}");
    eprintln!(
        "{tag}: boot {:.1}s; {} records delivered (0-{last_seq}), {} overwritten in {:?}, \
         {} of 4000 flood records delivered, markers {n}/{MARKERS}; silent quotes {last_text:?}",
        booted.as_secs_f64(),
        k.records.len(),
        overwritten,
        k.overwritten,
        flood.len()
    );
    let _ = booted;
}

/// Restart with --kmsg-state: ncu-send killed after markers 1-10, markers 11-20
/// written while none runs, started again: across both sessions no record twice,
/// none missing.
#[test]
fn kernel_lab_kmsg_restart_resumes_from_its_state() {
    let tag = "kmsg-restart";
    let (silent, events, _) = ncu_send_boot(
        tag,
        ("kmsg", "kmsg.sh"),
        "printk.devkmsg=on ncu.mode=restart",
        Await::SilentDead,
    );
    let starts: Vec<&Value> = events
        .iter()
        .filter(|e| is(e, "start") && e["sender"] == "guest")
        .collect();
    assert_eq!(starts.len(), 2, "{tag}: two runs of ncu-send: {starts:?}");
    let mut all = Kernel::default();
    for start in &starts {
        let k = kernel_of(&of_session(&events, &start["session"]), tag);
        assert!(
            k.lost.is_empty() && k.overwritten.is_empty(),
            "{tag}: {k:?}"
        );
        for (seq, text) in k.records {
            assert!(
                all.records.insert(seq, text).is_none(),
                "{tag}: kernel record {seq} sent by both runs"
            );
            all.delivered_order.push(seq);
        }
    }
    all.delivered_order.sort_unstable();
    assert_accounted(&all, 0, 0, tag);
    let mut got = markers(&all, "ncu-restart ");
    got.sort_unstable();
    assert_eq!(
        got,
        (1..=30).collect::<Vec<_>>(),
        "{tag}: markers 1-30, each once"
    );
    assert_eq!(silent["sender"], "guest");
}

/// --kmsg-level 4: level-6 markers are left out and counted, never reported lost.
#[test]
fn kernel_lab_kmsg_level_filter_counts_and_loses_nothing() {
    let tag = "kmsg-level";
    let (silent, events, _) = ncu_send_boot(
        tag,
        ("kmsg", "kmsg.sh"),
        "printk.devkmsg=on ncu.mode=level",
        Await::Silent,
    );
    let mine = session_events(&events, &silent);
    let k = kernel_of(&mine, tag);
    let (entry, _) = summary_of(&events, &silent["session"], tag);
    let filtered = entry["kernel_filtered"].as_u64().unwrap_or(0);
    assert!(
        filtered >= 19,
        "{tag}: 19 level-6 markers at least left out: {entry}"
    );
    assert!(k.overwritten.is_empty(), "{tag}: {:?}", k.overwritten);
    assert_accounted(&k, 0, filtered, tag);
    let texts: Vec<&String> = k
        .records
        .values()
        .filter(|t| t.starts_with("ncu-level"))
        .collect();
    assert!(
        texts.iter().all(|t| t.starts_with("ncu-level 4 ")),
        "{tag}: {texts:?}"
    );
    assert_eq!(texts.len(), 21, "{tag}: the 21 level-4 markers");
    assert_eq!(entry["lost"], 0, "{tag}: {entry}");
    assert!(
        mine.iter()
            .filter(|e| is(e, "line"))
            .all(|e| e["kernel"]["level"].as_u64() <= Some(4)),
        "{tag}: a record above level 4 was sent"
    );
}

/// Early boot: ncu-send --kmsg started by the initramfs init before any module is
/// loaded or the network is up, with an IP literal: the boot's first records
/// (sequence 0 on) arrive, recovered from its resend ring once the network is up.
#[test]
fn kernel_lab_kmsg_from_early_boot() {
    let tag = "kmsg-early";
    // The receiver's port is only known once it runs: ncu_send_boot puts it in
    // ncu.port, and init reads ncu.early for the early sender's port.
    let (silent, events, _) = ncu_send_boot_early(tag);
    let mine = session_events(&events, &silent);
    let k = kernel_of(&mine, tag);
    assert_eq!(k.records.keys().next(), Some(&0), "{tag}: record 0 missing");
    assert!(
        k.records.values().any(|t| t.starts_with("Linux version")),
        "{tag}: the boot banner"
    );
    assert_accounted(&k, 0, 0, tag);
    assert_eq!(
        markers(&k, "ncu-marker ").len(),
        20,
        "{tag}: the scenario's markers"
    );
}

fn ncu_send_boot_early(tag: &str) -> (Value, Vec<Value>, std::time::Duration) {
    // ncu.early takes the same port as ncu.port: "@PORT" is replaced by it.
    ncu_send_boot(
        tag,
        ("kmsg", "kmsg.sh"),
        "printk.devkmsg=on ncu.mode=early ncu.early=@PORT",
        Await::Silent,
    )
}

/// For the record (opt-in: `cargo test -- --ignored kmsg_readers`): the overrun
/// scenario with `cat /dev/kmsg | ncu-send` and `dmesg -w | ncu-send` beside
/// `--kmsg`; prints what each delivered and reported.
#[test]
#[ignore]
fn kernel_lab_kmsg_readers_compared() {
    let dmesg = lab().work.join("dmesg-util");
    std::fs::copy("/usr/bin/dmesg", &dmesg).expect("util-linux dmesg on the host");
    let _ = initramfs(
        "kmsg-readers",
        "kmsg.sh",
        &[static_ncu_send().to_owned(), dmesg],
    );
    for reader in ["kmsg", "cat", "dmesg"] {
        let tag = format!("kmsg-readers-{reader}");
        let (silent, events, _) = ncu_send_boot(
            &tag,
            ("kmsg-readers", "kmsg.sh"),
            &format!("printk.devkmsg=on ncu.mode=overrun ncu.reader={reader}"),
            // Only --kmsg stops ncu-send itself (silent once while stopped).
            match reader {
                "kmsg" => Await::SilentQuoting("ncu-marker"),
                _ => Await::EndOrSilent,
            },
        );
        let mine = session_events(&events, &silent);
        let lines: Vec<&str> = mine
            .iter()
            .filter(|e| is(e, "line"))
            .filter_map(|e| e["text"].as_str())
            .collect();
        let flood = lines.iter().filter(|t| t.contains("ncu-flood ")).count();
        let marks = lines.iter().filter(|t| t.contains("ncu-marker ")).count();
        let gaps: Vec<String> = mine
            .iter()
            .filter(|e| is(e, "gap"))
            .map(|e| format!("{}:{}-{}", e["kind"], e["first"], e["last"]))
            .collect();
        println!(
            "{reader}: {} lines; {flood} of 4000 flood records, {marks} of 20 markers after \
             the overrun; gaps reported: {gaps:?}; the session: {}",
            lines.len(),
            silent["event"]
        );
    }
}

/// How many `ncu-marker` lines session `session` has.
fn marker_lines(events: &[Value], session: &Value) -> usize {
    of_session(events, session)
        .into_iter()
        .filter(|e| {
            is(e, "line")
                && e["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("ncu-marker "))
        })
        .count()
}

/// The guest's serial console text (every line, printk or not).
fn serial(tag: &str) -> String {
    std::fs::read_to_string(lab().work.join(format!("{tag}.serial.log"))).unwrap_or_default()
}

/// --netconsole through qemu's user networking, a NAT: ncu-send sets up the
/// kernel's netconsole through configfs (mounting it) towards the same receiver;
/// the kernel's datagrams reach the host from another address than the one
/// ncu-send claimed, so they are not joined (never by guessing): they arrive as an
/// extended netconsole session beside the ncu one, carrying the markers and the
/// crash that ncu-send cannot send.
#[test]
fn kernel_lab_netconsole_companion_sends_the_crash() {
    let tag = "netconsole-companion";
    let (silent, events, _) = ncu_send_boot(
        tag,
        ("companion", "netconsole-companion.sh"),
        "ncu.ncmode=crash",
        // The kernel's netconsole session has no name: its sender is its address.
        Await::SilentOf("127.0.0.1"),
    );
    let log = serial(tag);
    assert!(
        log.contains("targets: [ncu-"),
        "{tag}: no target in configfs: {}",
        log.lines()
            .filter(|l| l.contains("companion"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let kernel_session = silent["session"].clone();
    let start = events
        .iter()
        .find(|e| is(e, "start") && e["session"] == kernel_session)
        .expect("a start");
    assert_eq!(start["source"], "kernel", "{tag}: {start}");
    let texts: Vec<&str> = of_session(&events, &kernel_session)
        .into_iter()
        .filter(|e| is(e, "line"))
        .filter_map(|e| e["text"].as_str())
        .collect();
    let markers = texts
        .iter()
        .filter(|t| t.starts_with("ncu-marker "))
        .count();
    assert_eq!(markers, 10, "{tag}: markers via the kernel's netconsole");
    assert!(
        texts.iter().any(|t| t.contains("sysrq: Trigger a crash"))
            && texts
                .iter()
                .any(|t| t.contains("Kernel panic") || t.contains("RIP:")),
        "{tag}: the crash via netconsole: {:?}",
        &texts[texts.len().saturating_sub(8)..]
    );
    let guest = events
        .iter()
        .find(|e| is(e, "start") && e["sender"] == "guest")
        .expect("the ncu session");
    let via_ncu = marker_lines(&events, &guest["session"]);
    assert_eq!(via_ncu, 10, "{tag}: markers via ncu-send --kmsg");
}

/// A clean end removes the target; no module: one line, --kmsg goes on.
#[test]
fn kernel_lab_netconsole_companion_cleans_up_and_fails_soft() {
    let tag = "netconsole-clean";
    let (_, _, _) = ncu_send_boot(
        tag,
        ("companion", "netconsole-companion.sh"),
        "ncu.ncmode=clean",
        Await::EndOrSilent,
    );
    let log = serial(tag);
    assert!(log.contains("targets: [ncu-"), "{tag}: the target was made");
    assert!(
        log.contains("after a clean end, targets: []"),
        "{tag}: the target stayed after a clean end"
    );
    let tag = "netconsole-nomodule";
    let (silent, events, _) = ncu_send_boot(
        tag,
        ("companion", "netconsole-companion.sh"),
        "ncu.ncmode=nomodule",
        Await::SilentOf("guest"),
    );
    let log = serial(tag);
    assert!(
        log.contains("ncu-send: netconsole: no /sys/kernel/config/netconsole")
            && log.contains("shipping with --kmsg goes on"),
        "{tag}: one clear line: {}",
        log.lines()
            .filter(|l| l.contains("said"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let markers = marker_lines(&events, &silent["session"]);
    assert_eq!(markers, 10, "{tag}: --kmsg shipping went on");
}

/// The whole story of one machine (issue 15): `--kmsg --netconsole` on a network
/// without NAT (a tap device of the test's own, so that the kernel's netconsole
/// reaches the receiver from exactly the address ncu-send claimed), then a panic of
/// the kind given (`lab_crash` in lab/guest/lab.sh). One session: every kernel record
/// once and in order, the panic that only the kernel's netconsole could send at its
/// end marked so, and `silent` and the report saying it in one sentence that quotes
/// the panic message. `first_words` are in a record of the panic's (via netconsole).
fn joined_story(panic: &str, first_words: &str, message: &str) {
    let tag = format!("netconsole-joined-{panic}");
    let tag = tag.as_str();
    let tap = super::Tap::new();
    let (silent, events, _) = super::ncu_send_boot_on(
        tag,
        ("companion", "netconsole-companion.sh"),
        &format!("ncu.ncmode=crash ncu.panic={panic}"),
        Await::SilentWithPanic,
        Some(&tap),
    );
    let starts: Vec<&Value> = events.iter().filter(|e| is(e, "start")).collect();
    assert_eq!(
        starts.len(),
        1,
        "{tag}: one session, no separate netconsole one: {starts:?}"
    );
    let lines: Vec<&Value> = of_session(&events, &silent["session"])
        .into_iter()
        .filter(|e| is(e, "line"))
        .collect();
    let seqs: Vec<u64> = lines
        .iter()
        .filter_map(|e| e["kernel"]["seq"].as_u64())
        .collect();
    assert_eq!(seqs.len(), lines.len(), "{tag}: every line a kernel record");
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "{tag}: once each, in order"
    );
    let via: Vec<&str> = lines
        .iter()
        .filter(|e| e["via"] == "netconsole")
        .filter_map(|e| e["text"].as_str())
        .collect();
    let first_via = lines
        .iter()
        .position(|e| e["via"] == "netconsole")
        .expect("via netconsole");
    assert!(
        lines[first_via..].iter().all(|e| e["via"] == "netconsole"),
        "{tag}: the netconsole's records follow ncu-send's"
    );
    let panic_line = format!("Kernel panic - not syncing: {message}");
    assert!(
        via.iter().any(|t| t.contains(first_words)) && via.contains(&panic_line.as_str()),
        "{tag}: {first_words:?} and {panic_line:?} via netconsole: {via:?}"
    );
    let markers = marker_lines(&events, &silent["session"]);
    assert_eq!(markers, 10, "{tag}: the markers once each");
    let story = silent["story"].as_str().unwrap_or_default();
    let silents = of_session(&events, &silent["session"])
        .into_iter()
        .filter(|e| is(e, "silent"))
        .count();
    assert!(
        story.starts_with("guest died: ncu-send's last record was ")
            && story.contains(&format!(
                "the kernel's netconsole then delivered {}-{}, with the panic '{panic_line}'",
                seqs[first_via],
                seqs[seqs.len() - 1]
            )),
        "{tag}: the sentence: {silent}"
    );
    assert_eq!(silent["netconsole"]["panic"], panic_line.as_str(), "{tag}");
    let report = super::report(tag);
    assert!(
        report.contains(story),
        "{tag}: the report tells the story:\n{report}"
    );
    eprintln!(
        "{tag}: {} records, {} via netconsole, {silents} silent event(s); {story}",
        lines.len(),
        via.len()
    );
}

/// sysrq `c`: `panic()` at once.
#[test]
fn kernel_lab_netconsole_joined_into_one_story() {
    joined_story("sysrq", "sysrq: Trigger a crash", "sysrq triggered crash");
}

/// An oops in process context (lab/crashmod writes through NULL in insmod), made a
/// panic by `kernel.panic_on_oops`.
#[test]
fn kernel_lab_netconsole_joined_null_dereference() {
    joined_story(
        "null",
        "BUG: kernel NULL pointer dereference",
        "Fatal exception",
    );
}

/// A soft lockup (lab/crashmod spins with preemption off), made a panic by
/// `kernel.softlockup_panic`.
#[test]
fn kernel_lab_netconsole_joined_soft_lockup() {
    joined_story("lockup", "BUG: soft lockup", "softlockup: hung tasks");
}

/// A hung task (lab/crashmod sleeps uninterruptibly), made a panic by
/// `kernel.hung_task_panic`.
#[test]
fn kernel_lab_netconsole_joined_hung_task() {
    joined_story("hung", "blocked for more than", "hung_task: blocked tasks");
}

/// As [`kernel_lab_netconsole_joined_into_one_story`] through netem in the guest
/// (loss 10%, reordering, delay, on both paths): what ncu-send lost while it lived
/// is recovered; every kernel number from 0 to the last is delivered once or named
/// missing on both paths exactly once.
#[test]
fn kernel_lab_netconsole_joined_through_netem() {
    let tag = "netconsole-netem";
    let tap = super::Tap::new();
    let (silent, events, _) = super::ncu_send_boot_on(
        tag,
        ("companion", "netconsole-companion.sh"),
        // 200 markers 5 ms apart: some 200 datagrams, so that the loss hits ncu-send's
        // path for certain (at 10%, none lost has a chance of 1 in 10^9).
        "ncu.ncmode=crash ncu.netem=loss,10%,reorder,25%,delay,5ms ncu.markers=200 \
         ncu.interval=5000",
        // HELLO may be lost, and a busy sender sends no heartbeat: the session may
        // not know its name yet.
        Await::Silent,
        Some(&tap),
    );
    let starts = events.iter().filter(|e| is(e, "start")).count();
    assert_eq!(starts, 1, "{tag}: one session");
    let mine = of_session(&events, &silent["session"]);
    let mut delivered = std::collections::BTreeSet::new();
    let mut named: Vec<(u64, u64)> = Vec::new();
    for e in &mine {
        if is(e, "line") {
            let k = e["kernel"]["seq"].as_u64().expect("kernel records");
            assert!(delivered.insert(k), "{tag}: record {k} twice");
        } else if is(e, "gap") && e["kind"] == "kernel_seq" {
            named.push((e["first"].as_u64().unwrap(), e["last"].as_u64().unwrap()));
        }
    }
    let last = *delivered.iter().next_back().expect("records");
    for k in 0..=last {
        let in_gaps = named.iter().filter(|&&(a, b)| a <= k && k <= b).count();
        assert_eq!(
            usize::from(delivered.contains(&k)) + in_gaps,
            1,
            "{tag}: record {k}: delivered once or named missing once"
        );
    }
    let markers = marker_lines(&events, &silent["session"]);
    assert_eq!(
        markers, 200,
        "{tag}: every marker, by one path or the other"
    );
    let (entry, _) = summary_of(&events, &silent["session"], tag);
    assert!(
        entry["recovered"].as_u64().unwrap_or(0) > 0,
        "{tag}: recovery worked: {entry}"
    );
    let story = silent["story"].as_str().unwrap_or_default();
    assert!(
        story.contains("the kernel's netconsole then delivered"),
        "{tag}: {silent}"
    );
    eprintln!(
        "{tag}: {} records delivered, {} named missing on both paths, {} recovered; {story}",
        delivered.len(),
        named.iter().map(|(a, b)| b - a + 1).sum::<u64>(),
        entry["recovered"]
    );
}

/// Two machines, one receiver (issue 15): while one guest runs `--kmsg
/// --netconsole` on its tap network and crashes, a second guest's plain kernel
/// netconsole (qemu's user network: it reaches the host as 127.0.0.1) sends its own
/// markers and crash to the same port. The claim joins exactly the first one's
/// records: the second stays a session of its own, none of its lines in the first
/// one's story, and the first story is whole.
#[test]
fn kernel_lab_second_guest_stays_its_own_session() {
    let tag = "two-guests";
    let tap = super::Tap::new();
    let joined = initramfs(
        "companion",
        "netconsole-companion.sh",
        &[static_ncu_send().to_owned()],
    );
    let plain = initramfs("markers", "netconsole-markers.sh", &[]);
    let mut recv = super::Recv::start(&["--dead-after", "2s", "--reorder-window", "1s"]);
    let port = recv.port;
    // One boot slot for both: the two guests run side by side.
    let slot = super::boot_slot();
    std::thread::scope(|s| {
        let second = s.spawn(|| {
            super::boot_in_slot(
                &plain,
                &format!("panic=1 ncu.port={port} ncu.mode=plain ncu.markers=20 ncu.sleep=1"),
                &format!("{tag}-plain"),
                None,
            )
        });
        super::boot_in_slot(
            &joined,
            &format!("panic=1 ncu.port={port} ncu.ncmode=crash {}", tap.cmdline),
            &format!("{tag}-joined"),
            Some(&tap),
        );
        second.join().expect("the second guest's boot");
    });
    drop(slot);
    let story = recv.wait_for(std::time::Duration::from_secs(15), |e| {
        is(e, "silent") && e["netconsole"]["panic"].is_string()
    });
    let plain_silent = recv.wait_for(std::time::Duration::from_secs(15), |e| {
        is(e, "silent") && e["sender"] != "guest"
    });
    let events = recv.stop();
    super::save_events(&events, tag);
    let story = story.expect("the joined session's silent with the panic");
    let plain_silent = plain_silent.expect("the plain netconsole session's silent");
    let joined_session = &story["session"];
    assert_ne!(
        &plain_silent["session"], joined_session,
        "{tag}: two sessions"
    );
    let starts: Vec<&Value> = events.iter().filter(|e| is(e, "start")).collect();
    assert_eq!(starts.len(), 2, "{tag}: two sessions: {starts:?}");
    let plain_start = starts
        .iter()
        .find(|e| e["session"] == plain_silent["session"])
        .expect("the plain session's start");
    assert_ne!(plain_start["source"], "ncu", "{tag}: {plain_start}");
    // The markers of each: "of 0010" the joined guest's, "of 0020" the plain one's.
    let markers_of = |session: &Value, of: &str| {
        of_session(&events, session)
            .into_iter()
            .filter(|e| is(e, "line"))
            .filter(|e| {
                e["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("ncu-marker ") && t.ends_with(of))
            })
            .count()
    };
    assert_eq!(
        markers_of(joined_session, "of 0020"),
        0,
        "{tag}: no false merge"
    );
    assert_eq!(
        markers_of(joined_session, "of 0010"),
        10,
        "{tag}: the story whole"
    );
    assert_eq!(
        markers_of(&plain_silent["session"], "of 0010"),
        0,
        "{tag}: nothing of the joined guest in the plain session"
    );
    let plain_markers = markers_of(&plain_silent["session"], "of 0020");
    assert!(
        plain_markers > 0,
        "{tag}: the plain guest's markers in its own session"
    );
    let seqs: Vec<u64> = of_session(&events, joined_session)
        .into_iter()
        .filter(|e| is(e, "line"))
        .map(|e| e["kernel"]["seq"].as_u64().expect("kernel records"))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "{tag}: once each, in order"
    );
    eprintln!(
        "{tag}: joined {} records; plain session {} ({plain_markers} of 20 markers); {}",
        seqs.len(),
        plain_silent["addr"],
        story["story"]
    );
}
