//! How events look: text markers (`### ncu: ...`) and JSON objects (CONTRACT.md).

use std::cell::Cell;
use std::io::{self, Write};

use chrono::{DateTime, Datelike, SecondsFormat};
use ncu_proto::event::{
    Event, GapKind, KernelMeta, NetconsoleTail, SessionInfo, SessionSummary, SilentReason,
    SourceKind,
};
use ncu_proto::reassembler::Stats;
use ncu_proto::wire::EndReason;

use crate::escape;

/// The receiver's own counters, besides the reassembler's.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    /// The kernel's drop count for the socket (receive buffer full), when readable.
    pub(crate) kernel_drops: Option<u64>,
    /// How often the receiving thread found every chunk full and waited
    /// ([`crate::intake`]): the socket's buffer took what came meanwhile.
    pub(crate) ring_full: u64,
    /// Datagrams the receiving thread took off the socket while the main loop was
    /// busy.
    pub(crate) ring_taken: u64,
    /// Writes under `--output-dir` that failed.
    pub(crate) output_errors: u64,
    /// Events standard output could not take (a full disk), dropped.
    pub(crate) stdout_dropped: u64,
    /// The receive buffer granted, bytes.
    pub(crate) rcvbuf: usize,
    /// The receive buffer asked for (`--receive-buffer`), bytes.
    pub(crate) rcvbuf_wanted: usize,
    /// NACKs are sent (not `--no-nack`).
    pub(crate) nack: bool,
    /// NACK datagrams handed to the kernel.
    pub(crate) nacks_sent: u64,
    /// NACK datagrams not sent: the socket's send buffer was full.
    pub(crate) nacks_dropped: u64,
    /// NACK datagrams not sent: any other send error.
    pub(crate) nack_send_errors: u64,
    /// The memory budget (`--max-held`), bytes.
    pub(crate) max_held: usize,
}

/// What the memory budget did, in words (text summary and report); `None` when it
/// was never full.
pub(crate) fn budget_text(stats: &Stats, counters: &Counters) -> Option<String> {
    (stats.held_limit_reached > 0).then(|| {
        format!(
            "memory budget (--max-held {} KiB) full {} times: the oldest incomplete work \
             of the heaviest source was given up (reported as gaps) or its oldest \
             session retired",
            counters.max_held / 1024,
            stats.held_limit_reached
        )
    })
}

/// RFC 3339 UTC with microseconds: `2024-05-01T12:00:00.123456Z`.
pub(crate) fn rfc3339(us: u64) -> String {
    rfc3339_into(us, &mut [0; RFC3339_LEN]).to_owned()
}

/// The length of [`rfc3339`]'s text.
pub(crate) const RFC3339_LEN: usize = 27;

thread_local! {
    /// The last second formatted, and its `2024-05-01T12:00:00` (a receiver writes
    /// many lines in one second: the calendar is worked out once for them).
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// [`rfc3339`] into `out`, without allocating.
pub(crate) fn rfc3339_into(us: u64, out: &mut [u8; RFC3339_LEN]) -> &str {
    const OUT_OF_RANGE: &[u8; RFC3339_LEN] = b"1970-01-01T00:00:00.000000Z";
    let secs = us / 1_000_000;
    let (cached, mut prefix) = SECOND.get();
    if cached != secs {
        let Some(t) = i64::try_from(secs)
            .ok()
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .filter(|t| (0..=9999).contains(&t.year()))
        else {
            *out = *OUT_OF_RANGE;
            return std::str::from_utf8(out).unwrap_or_default();
        };
        let text = t.to_rfc3339_opts(SecondsFormat::Secs, true);
        prefix.copy_from_slice(&text.as_bytes()[..19]);
        SECOND.set((secs, prefix));
    }
    out[..19].copy_from_slice(&prefix);
    out[19] = b'.';
    let mut frac = (us % 1_000_000) as u32;
    for i in (20..26).rev() {
        out[i] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    out[26] = b'Z';
    // ASCII digits and punctuation only.
    std::str::from_utf8(out).unwrap_or_default()
}

/// The one sentence a ticket reader needs about a `--kmsg --netconsole` sender that
/// died: what ncu-send sent last, what the kernel's netconsole delivered after it,
/// and whether anything is missing.
pub(crate) fn story(session: &SessionInfo, tail: &NetconsoleTail) -> String {
    let name = session.name();
    let name = escape::field(name.as_bytes());
    let before = match tail.last_kmsg {
        Some((k, Some(at))) => format!(
            "ncu-send's last record was {k} at {}",
            rfc3339(at).get(11..23).unwrap_or("?")
        ),
        Some((k, None)) => format!("ncu-send's last record was {k}"),
        None => "ncu-send sent no record".to_owned(),
    };
    let range = if tail.first == tail.last {
        format!("{}", tail.first)
    } else {
        format!("{}-{}", tail.first, tail.last)
    };
    let missing = match tail.missing {
        0 => "no record missing".to_owned(),
        1 => "1 record missing".to_owned(),
        n => format!("{n} records missing"),
    };
    // The panic message tells more than what follows it (`Rebooting in 1 seconds..`).
    let what = match &tail.panic {
        Some(panic) => format!("with the panic '{}'", escape::field_cut(panic, 200)),
        None => format!("ending '{}'", escape::field_cut(&tail.last_text, 200)),
    };
    format!(
        "{name} died: {before}; the kernel's netconsole then delivered {range}, {what}; {missing}."
    )
}

/// Stable JSON name of an END reason.
pub(crate) fn end_reason_name(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Eof => "eof",
        EndReason::Signal(_) => "signal",
        EndReason::Exit(_) => "exit",
        EndReason::CommandSignal(_) => "command_signal",
    }
}

fn who(s: &SessionInfo) -> String {
    format!(
        "sender={} session={}",
        escape::field(s.name().as_bytes()),
        s.id_hex()
    )
}

fn lines_range(first: u64, last: u64) -> String {
    if first == last {
        format!("line {first}")
    } else {
        format!("lines {first}-{last}")
    }
}

/// The `### ncu: ...` marker of an event (without newline); `None` for lines that
/// are not late.
pub(crate) fn text_marker(event: &Event) -> Option<String> {
    let m = match event {
        Event::Start {
            session,
            first_seq,
            joined,
        } => {
            let mut m = format!(
                "start {} addr={} source={}",
                who(session),
                session.addr,
                session.kind.as_str()
            );
            if *joined {
                m.push_str(&format!(
                    " (joined mid-way: lines before {first_seq} were sent before this receiver listened)"
                ));
            } else if *first_seq != 1 {
                m.push_str(&format!(" from line {first_seq}"));
            }
            m
        }
        Event::Line {
            session, seq, late, ..
        } => {
            if !late {
                return None;
            }
            format!(
                "late {} {} arrived after its gap was reported",
                who(session),
                lines_range(*seq, *seq)
            )
        }
        Event::Gap {
            session,
            first,
            last,
            kind,
        } => {
            let count = last - first + 1;
            match kind {
                GapKind::Lost => format!(
                    "gap {} {} ({count} lost)",
                    who(session),
                    lines_range(*first, *last)
                ),
                GapKind::KernelSeq => format!(
                    "gap {} kernel records {first}-{last} ({count} skipped; may be records \
                     below the console loglevel, not losses)",
                    who(session)
                ),
                GapKind::Overwritten => format!(
                    "gap {} kernel records {first}-{last} ({count} overwritten in the \
                     kernel's ring before ncu-send read them)",
                    who(session)
                ),
            }
        }
        Event::Silent {
            session,
            last_seq,
            last_text,
            last_received_at_us,
            reason,
            netconsole,
            ..
        } => {
            let why = match reason {
                SilentReason::DeadAfter => "nothing received",
                SilentReason::Restarted => "restarted (a new session of this sender began)",
            };
            let mut m = format!(
                "silent {} {why}; last datagram at {}",
                who(session),
                rfc3339(*last_received_at_us)
            );
            if *last_seq == 0 {
                m.push_str("; no line received");
            } else {
                m.push_str(&format!("; last line {last_seq}"));
                if let Some(text) = last_text {
                    m.push_str(&format!(": {}", escape::field_cut(text, 200)));
                }
            }
            if let Some(tail) = netconsole {
                m.push_str(&format!("; {}", story(session, tail)));
            }
            m
        }
        Event::Resumed { session, seq } => {
            format!("resumed {} at line {seq}", who(session))
        }
        Event::End {
            session,
            lines,
            lost,
            reason,
            ..
        } => format!(
            "end {} {lines} lines sent, {lost} lost ({reason})",
            who(session)
        ),
        Event::Corrupt {
            addr,
            reason,
            suppressed,
        } => {
            let mut m = format!("corrupt addr={addr} reason={reason}");
            if *suppressed > 0 {
                m.push_str(&format!(" ({suppressed} more before this not shown)"));
            }
            m
        }
        Event::Retired { session } => format!(
            "retired {} (too many sessions: dropped from memory, its lines from now on start a new session)",
            who(session)
        ),
    };
    Some(format!("### ncu: {m}"))
}

/// How a line's bytes are put into text output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineBytes {
    /// Byte for byte (files, pipes, `--raw`).
    Raw,
    /// Control bytes escaped ([`escape::terminal_line`]): standard output is a terminal.
    Terminal,
}

/// Appends a line's text form: `[name: ]bytes\n` (the name escaped).
pub(crate) fn text_line(
    session: &SessionInfo,
    text: &[u8],
    kernel: Option<&KernelMeta>,
    prefix: bool,
    bytes: LineBytes,
    out: &mut Vec<u8>,
) {
    if prefix {
        out.extend_from_slice(escape::field(session.name().as_bytes()).as_bytes());
        out.extend_from_slice(b": ");
    }
    // A kernel record from `ncu-send --kmsg`: as dmesg prints it (the ones only
    // the kernel's netconsole delivered marked so).
    if let (Some(k), SourceKind::Ncu) = (kernel, session.kind) {
        if k.via_netconsole {
            out.extend_from_slice(b"[via netconsole] ");
        }
        let (secs, us) = (k.ts_usec / 1_000_000, k.ts_usec % 1_000_000);
        out.extend_from_slice(format!("[{secs:5}.{us:06}] ").as_bytes());
    }
    match bytes {
        LineBytes::Raw => out.extend_from_slice(text),
        LineBytes::Terminal => escape::terminal_line(text, out),
    }
    out.push(b'\n');
}

/// `--kmsg` sessions: what the kernel's own numbering says beyond lines lost.
fn kernel_text(s: &SessionSummary) -> String {
    let mut t = String::new();
    if s.kernel_overwritten > 0 {
        t.push_str(&format!(
            "; {} kernel records overwritten in the ring before ncu-send read them",
            s.kernel_overwritten
        ));
    }
    if s.kernel_filtered > 0 {
        t.push_str(&format!(
            "; {} kernel records left out by --kmsg-level (not lost)",
            s.kernel_filtered
        ));
    }
    t
}

fn fate_text(s: &SessionSummary) -> String {
    match (s.fate.as_str(), s.end_reason) {
        ("ended", Some(r)) => format!("ended ({r})"),
        (f, _) => f.to_owned(),
    }
}

fn corrupt_text(stats: &Stats) -> String {
    if stats.corrupt.is_empty() {
        return "0 datagrams rejected".to_owned();
    }
    let parts: Vec<String> = stats
        .corrupt
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    format!(
        "{} datagrams rejected ({})",
        stats.corrupt_total(),
        parts.join(", ")
    )
}

/// The NACK counters in words (text summary and report).
pub(crate) fn nack_text(stats: &Stats, counters: &Counters) -> String {
    if !counters.nack {
        return "NACKs off (--no-nack)".to_owned();
    }
    let mut t = format!(
        "NACKs sent {}, suppressed by the rate limit {}",
        counters.nacks_sent, stats.nacks_suppressed
    );
    if counters.nacks_dropped > 0 {
        t.push_str(&format!(
            ", dropped (send buffer full) {}",
            counters.nacks_dropped
        ));
    }
    if counters.nack_send_errors > 0 {
        t.push_str(&format!(", send errors {}", counters.nack_send_errors));
    }
    t
}

/// The marker put where standard output dropped `count` events (it failed with
/// `error`, e.g. a full disk), before the next event it takes.
pub(crate) fn output_dropped(json: bool, count: u64, error: &str, out: &mut Vec<u8>) {
    if json {
        crate::json::output_dropped(count, error, out);
    } else {
        out.extend_from_slice(
            format!(
                "### ncu: output {count} events were not written here: standard output \
                 failed ({error})\n"
            )
            .as_bytes(),
        );
    }
}

/// Writes the exit summary: one JSON object, or a block of `### ncu: summary` lines.
pub(crate) fn summary(
    json: bool,
    sessions: &[SessionSummary],
    stats: &Stats,
    counters: &Counters,
    out: &mut impl Write,
) -> io::Result<()> {
    if json {
        let mut line = Vec::new();
        crate::json::summary(sessions, stats, counters, &mut line);
        return out.write_all(&line);
    }
    let drops = match counters.kernel_drops {
        Some(n) => n.to_string(),
        None => "unknown".to_owned(),
    };
    writeln!(
        out,
        "### ncu: summary {} sessions, {} datagrams; {}; kernel drops {drops}",
        sessions.len(),
        stats.datagrams,
        corrupt_text(stats)
    )?;
    if counters.output_errors > 0 {
        writeln!(
            out,
            "### ncu: summary {} writes under --output-dir failed",
            counters.output_errors
        )?;
    }
    if counters.stdout_dropped > 0 {
        writeln!(
            out,
            "### ncu: summary {} events could not be written to standard output",
            counters.stdout_dropped
        )?;
    }
    writeln!(out, "### ncu: summary {}", nack_text(stats, counters))?;
    if let Some(t) = budget_text(stats, counters) {
        writeln!(out, "### ncu: summary {t}")?;
    }
    for s in sessions {
        writeln!(
            out,
            "### ncu: summary {} addr={}: {} lines, {} lost, {} duplicates, {} reordered, {} late, {} recovered{}{}; {}",
            who(&s.session),
            s.session.addr,
            s.lines,
            s.lost,
            s.duplicates,
            s.reordered,
            s.late,
            s.recovered,
            if s.recovery {
                " (sender offers recovery)"
            } else {
                " (sender without recovery)"
            },
            kernel_text(s),
            fate_text(s)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    use ncu_proto::event::{Fate, SourceKind};

    use super::*;
    use crate::escape::tests::Rng;

    /// Every event with network text in it, for a session named `name`.
    fn events(name: &[u8], last: &[u8]) -> (Vec<Event>, SessionSummary) {
        let session = SessionInfo {
            id: 7,
            given_name: Some(String::from_utf8_lossy(name).into()),
            addr: "[::1]:4000".parse().expect("an address"),
            kind: SourceKind::Ncu,
        };
        let events = vec![
            Event::Start {
                session: session.clone(),
                first_seq: 3,
                joined: true,
            },
            Event::Line {
                session: session.clone(),
                seq: 4,
                text: last.to_vec(),
                partial: false,
                continuation: false,
                late: true,
                sent_at_us: None,
                received_at_us: 0,
                kernel: None,
            },
            Event::Gap {
                session: session.clone(),
                first: 1,
                last: 2,
                kind: GapKind::Lost,
            },
            Event::Silent {
                session: session.clone(),
                last_seq: 4,
                last_text: Some(last.to_vec()),
                last_sent_at_us: None,
                last_received_at_us: 0,
                reason: SilentReason::DeadAfter,
                netconsole: None,
            },
            Event::Resumed {
                session: session.clone(),
                seq: 5,
            },
            Event::End {
                session: session.clone(),
                last_seq: 5,
                lines: 5,
                lost: 2,
                reason: EndReason::Eof,
            },
            Event::Retired {
                session: session.clone(),
            },
        ];
        let summary = SessionSummary {
            session,
            first_seq: 1,
            joined: false,
            lines: 1,
            lost: 0,
            kernel_seq_skipped: 0,
            kernel_overwritten: 0,
            kernel_overwritten_ranges: Vec::new(),
            kernel_filtered: 0,
            duplicates: 0,
            reordered: 0,
            late: 0,
            recovered: 0,
            recovery: false,
            fate: Fate::Silent,
            end_reason: None,
            first_received_at_us: 0,
            last_received_at_us: 0,
            last_line: None,
            netconsole: None,
        };
        (events, summary)
    }

    fn assert_one_clean_line(text: &str) {
        assert!(text.starts_with("### ncu: "), "{text:?}");
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }

    #[test]
    fn every_marker_is_one_line_without_control_bytes_whatever_the_sender_sends() {
        let seed = 0x5eed_0003;
        println!("seed {seed:#x}");
        let mut rng = Rng(seed);
        for _ in 0..5000 {
            let (events, summary_of) = events(&rng.hostile_bytes(48), &rng.hostile_bytes(300));
            for event in &events {
                assert_one_clean_line(&text_marker(event).expect("every one has a marker"));
            }
            let mut out = Vec::new();
            summary(
                false,
                std::slice::from_ref(&summary_of),
                &Stats::default(),
                &Counters::default(),
                &mut out,
            )
            .expect("into a Vec");
            let out = String::from_utf8(out).expect("the summary is UTF-8");
            for line in out.lines() {
                assert_one_clean_line(line);
            }
            let mut prefixed = Vec::new();
            text_line(
                &summary_of.session,
                b"x",
                None,
                true,
                LineBytes::Raw,
                &mut prefixed,
            );
            assert_eq!(prefixed.iter().filter(|&&b| b == b'\n').count(), 1);
            assert!(!prefixed[..prefixed.len() - 1]
                .iter()
                .any(|&b| b.is_ascii_control()));
        }
    }

    #[test]
    fn lines_keep_their_bytes_except_on_a_terminal() {
        let (_, s) = events(b"n", b"");
        let line = b"\x1b[31mred\x1b[0m\r\tdone \\ \xff";
        let mut raw = Vec::new();
        text_line(&s.session, line, None, false, LineBytes::Raw, &mut raw);
        assert_eq!(raw, [&line[..], b"\n"].concat());
        let mut shown = Vec::new();
        text_line(
            &s.session,
            line,
            None,
            false,
            LineBytes::Terminal,
            &mut shown,
        );
        assert_eq!(shown, b"\\x1b[31mred\\x1b[0m\\x0d\tdone \\ \\xff\n");
    }
}
