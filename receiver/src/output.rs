//! How events look: text markers (`### ncu: ...`) and JSON objects (CONTRACT.md).

use std::io::{self, Write};

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat};
use ncu_proto::event::{Event, GapKind, KernelMeta, SessionInfo, SessionSummary, SilentReason};
use ncu_proto::reassembler::Stats;
use ncu_proto::wire::EndReason;

use crate::escape;

/// The receiver's own counters, besides the reassembler's.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    /// The kernel's drop count for the socket (receive buffer full), when readable.
    pub(crate) kernel_drops: Option<u64>,
    /// Writes under `--output-dir` that failed.
    pub(crate) output_errors: u64,
    /// Events standard output could not take (a full disk), dropped.
    pub(crate) stdout_dropped: u64,
    /// The receive buffer granted, bytes.
    pub(crate) rcvbuf: usize,
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
    match DateTime::from_timestamp_micros(i64::try_from(us).unwrap_or(i64::MAX)) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Micros, true),
        None => "1970-01-01T00:00:00.000000Z".to_owned(),
    }
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
        escape::field(s.name.as_bytes()),
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
            }
        }
        Event::Silent {
            session,
            last_seq,
            last_text,
            last_received_at_us,
            reason,
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

/// A JSON object being written into a buffer.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut Vec<u8>, event: &str) -> Obj<'a> {
        out.push(b'{');
        let mut obj = Obj { out, first: true };
        obj.str("event", event);
        obj
    }
    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }
    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        // Writing into a Vec cannot fail, and a &str always serializes.
        let _ = serde_json::to_writer(&mut *self.out, value);
    }
    fn num(&mut self, key: &str, value: u64) {
        self.key(key);
        let _ = write!(self.out, "{value}");
    }
    fn int(&mut self, key: &str, value: i64) {
        self.key(key);
        let _ = write!(self.out, "{value}");
    }
    fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }
    fn null(&mut self, key: &str) {
        self.key(key);
        self.out.extend_from_slice(b"null");
    }
    fn time(&mut self, key: &str, us: Option<u64>) {
        match us {
            Some(us) => self.str(key, &rfc3339(us)),
            None => self.null(key),
        }
    }
    /// `text_key` when `bytes` are UTF-8, else `bytes_key` with base64.
    fn text(&mut self, text_key: &str, bytes_key: &str, bytes: &[u8]) {
        match std::str::from_utf8(bytes) {
            Ok(s) => self.str(text_key, s),
            Err(_) => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
                self.str(bytes_key, &b64);
            }
        }
    }
    fn value(&mut self, key: &str, value: &serde_json::Value) {
        self.key(key);
        let _ = serde_json::to_writer(&mut *self.out, value);
    }
    fn session(&mut self, s: &SessionInfo) {
        self.str("sender", &s.name);
        self.str("addr", &s.addr.to_string());
        self.str("session", &s.id_hex());
    }
    fn end(self) {
        self.out.extend_from_slice(b"}\n");
    }
}

fn kernel_json(k: &KernelMeta) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("level".into(), k.level.into());
    m.insert("facility".into(), k.facility.into());
    m.insert("seq".into(), k.seq.into());
    m.insert("ts_usec".into(), k.ts_usec.into());
    m.insert("cont".into(), k.cont.into());
    if let Some(id) = k.msgid {
        m.insert("msgid".into(), id.into());
    }
    for (key, value) in &k.fields {
        if !m.contains_key(key) {
            m.insert(key.clone(), value.clone().into());
        }
    }
    serde_json::Value::Object(m)
}

/// Appends the JSON line of an event to `out`.
pub(crate) fn json_event(event: &Event, out: &mut Vec<u8>) {
    match event {
        Event::Start {
            session,
            first_seq,
            joined,
        } => {
            let mut o = Obj::new(out, "start");
            o.session(session);
            o.num("first_seq", *first_seq);
            o.str("source", session.kind.as_str());
            if *joined {
                o.bool("joined", true);
            }
            o.end();
        }
        Event::Line {
            session,
            seq,
            text,
            partial,
            continuation,
            late,
            sent_at_us,
            received_at_us,
            kernel,
        } => {
            let mut o = Obj::new(out, "line");
            o.session(session);
            o.num("seq", *seq);
            o.text("text", "bytes", text);
            o.time("sent_at", *sent_at_us);
            o.time("received_at", Some(*received_at_us));
            if *partial {
                o.bool("partial", true);
            }
            if *late {
                o.bool("late", true);
            }
            if *continuation {
                o.bool("continuation", true);
            }
            if let Some(k) = kernel {
                o.value("kernel", &kernel_json(k));
            }
            o.end();
        }
        Event::Gap {
            session,
            first,
            last,
            kind,
        } => {
            let mut o = Obj::new(out, "gap");
            o.session(session);
            o.num("first", *first);
            o.num("last", *last);
            o.num("count", last - first + 1);
            o.str("kind", kind.as_str());
            o.end();
        }
        Event::Silent {
            session,
            last_seq,
            last_text,
            last_sent_at_us,
            last_received_at_us,
            reason,
        } => {
            let mut o = Obj::new(out, "silent");
            o.session(session);
            o.num("last_seq", *last_seq);
            match last_text {
                Some(t) => o.text("last_text", "last_bytes", t),
                None => o.null("last_text"),
            }
            o.time("last_sent_at", *last_sent_at_us);
            o.time("last_received_at", Some(*last_received_at_us));
            o.str("reason", reason.as_str());
            o.end();
        }
        Event::Resumed { session, seq } => {
            let mut o = Obj::new(out, "resumed");
            o.session(session);
            o.num("seq", *seq);
            o.end();
        }
        Event::End {
            session,
            last_seq,
            lines,
            lost,
            reason,
        } => {
            let mut o = Obj::new(out, "end");
            o.session(session);
            o.num("last_seq", *last_seq);
            o.num("lines", *lines);
            o.num("lost", *lost);
            o.str("reason", end_reason_name(*reason));
            match reason {
                EndReason::Eof => {}
                EndReason::Signal(n) | EndReason::CommandSignal(n) => {
                    o.int("signal", i64::from(*n))
                }
                EndReason::Exit(n) => o.int("status", i64::from(*n)),
            }
            o.end();
        }
        Event::Corrupt {
            addr,
            reason,
            suppressed,
        } => {
            let mut o = Obj::new(out, "corrupt");
            o.str("addr", &addr.to_string());
            o.str("reason", reason.as_str());
            if *suppressed > 0 {
                o.num("suppressed", *suppressed);
            }
            o.end();
        }
        Event::Retired { session } => {
            let mut o = Obj::new(out, "retired");
            o.session(session);
            o.end();
        }
    }
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
    prefix: bool,
    bytes: LineBytes,
    out: &mut Vec<u8>,
) {
    if prefix {
        out.extend_from_slice(escape::field(session.name.as_bytes()).as_bytes());
        out.extend_from_slice(b": ");
    }
    match bytes {
        LineBytes::Raw => out.extend_from_slice(text),
        LineBytes::Terminal => escape::terminal_line(text, out),
    }
    out.push(b'\n');
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
        let v = serde_json::json!({
            "event": "output_dropped",
            "count": count,
            "error": error,
        });
        out.extend_from_slice(v.to_string().as_bytes());
        out.push(b'\n');
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
        let list: Vec<serde_json::Value> = sessions
            .iter()
            .map(|s| {
                let mut m = serde_json::Map::new();
                m.insert("sender".into(), s.session.name.clone().into());
                m.insert("addr".into(), s.session.addr.to_string().into());
                m.insert("session".into(), s.session.id_hex().into());
                m.insert("source".into(), s.session.kind.as_str().into());
                m.insert("lines".into(), s.lines.into());
                m.insert("lost".into(), s.lost.into());
                m.insert("duplicates".into(), s.duplicates.into());
                m.insert("reordered".into(), s.reordered.into());
                m.insert("late".into(), s.late.into());
                m.insert("recovered".into(), s.recovered.into());
                m.insert("recovery".into(), s.recovery.into());
                m.insert("fate".into(), s.fate.as_str().into());
                m.insert("first_seq".into(), s.first_seq.into());
                m.insert("joined".into(), s.joined.into());
                if s.kernel_seq_skipped > 0 {
                    m.insert("kernel_seq_skipped".into(), s.kernel_seq_skipped.into());
                }
                if let Some(r) = s.end_reason {
                    m.insert("end_reason".into(), end_reason_name(r).into());
                }
                m.insert(
                    "first_received_at".into(),
                    rfc3339(s.first_received_at_us).into(),
                );
                m.insert(
                    "last_received_at".into(),
                    rfc3339(s.last_received_at_us).into(),
                );
                serde_json::Value::Object(m)
            })
            .collect();
        let corrupt: serde_json::Map<String, serde_json::Value> = stats
            .corrupt
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).into()))
            .collect();
        let v = serde_json::json!({
            "event": "summary",
            "sessions": list,
            "corrupt": corrupt,
            "corrupt_total": stats.corrupt_total(),
            "datagrams": stats.datagrams,
            "bytes": stats.bytes,
            "sessions_seen": stats.sessions,
            "retired": stats.retired,
            "kernel_drops": counters.kernel_drops,
            "output_errors": counters.output_errors,
            "stdout_dropped": counters.stdout_dropped,
            "nack": counters.nack,
            "nacks_sent": counters.nacks_sent,
            "nacks_suppressed": stats.nacks_suppressed,
            "nacks_dropped": counters.nacks_dropped,
            "nack_send_errors": counters.nack_send_errors,
            "max_held": counters.max_held,
            "held_limit_reached": stats.held_limit_reached,
        });
        serde_json::to_writer(&mut *out, &v)?;
        out.write_all(b"\n")?;
        return Ok(());
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
            "### ncu: summary {} addr={}: {} lines, {} lost, {} duplicates, {} reordered, {} late, {} recovered{}; {}",
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
            fate_text(s)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ncu_proto::event::{Fate, SourceKind};

    use super::*;
    use crate::escape::tests::Rng;

    /// Every event with network text in it, for a session named `name`.
    fn events(name: &[u8], last: &[u8]) -> (Vec<Event>, SessionSummary) {
        let session = Arc::new(SessionInfo {
            id: 7,
            name: String::from_utf8_lossy(name).into_owned(),
            addr: "[::1]:4000".parse().expect("an address"),
            kind: SourceKind::Ncu,
        });
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
        text_line(&s.session, line, false, LineBytes::Raw, &mut raw);
        assert_eq!(raw, [&line[..], b"\n"].concat());
        let mut shown = Vec::new();
        text_line(&s.session, line, false, LineBytes::Terminal, &mut shown);
        assert_eq!(shown, b"\\x1b[31mred\\x1b[0m\\x0d\tdone \\ \\xff\n");
    }
}
