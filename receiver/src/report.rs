//! The Markdown gap report (`--report`): what a bug ticket needs, per sender and
//! session, plus the receiver's own counters. The lost ranges are collected here from
//! gap events, bounded per session and in total.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

use ncu_proto::event::{Event, Fate, GapKind, SessionSummary};
use ncu_proto::reassembler::Stats;

use crate::escape;
use crate::output::{budget_text, nack_text, rfc3339, Counters};

/// Lost ranges listed per session; the rest are counted.
const MAX_RANGES_PER_SESSION: usize = 1000;
/// Lost ranges kept over all sessions.
const MAX_RANGES_TOTAL: usize = 200_000;
/// Sessions whose ranges are kept (oldest forgotten first).
const MAX_SESSIONS: usize = 32_768;
/// Longest last line quoted.
const MAX_QUOTE: usize = 4096;

#[derive(Debug, Default)]
struct Ranges {
    listed: Vec<(u64, u64)>,
    more_ranges: u64,
    more_lines: u64,
    kernel_ranges: u64,
    kernel_skipped: u64,
}

/// Gap ranges per session, bounded.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    sessions: HashMap<u64, Ranges>,
    order: VecDeque<u64>,
    total: usize,
    /// Sessions forgotten to stay within bounds.
    forgotten: u64,
}

impl Ledger {
    /// Notes what the report needs from an event.
    pub(crate) fn note(&mut self, event: &Event) {
        let Event::Gap {
            session,
            first,
            last,
            kind,
        } = event
        else {
            return;
        };
        if !self.sessions.contains_key(&session.id) {
            if self.sessions.len() >= MAX_SESSIONS {
                if let Some(old) = self.order.pop_front() {
                    if let Some(r) = self.sessions.remove(&old) {
                        self.total -= r.listed.len();
                    }
                    self.forgotten += 1;
                }
            }
            self.order.push_back(session.id);
        }
        let r = self.sessions.entry(session.id).or_default();
        match kind {
            GapKind::KernelSeq => {
                r.kernel_ranges += 1;
                r.kernel_skipped += last - first + 1;
            }
            // In the session's summary (kernel numbers, not lines).
            GapKind::Overwritten => {}
            GapKind::Lost => {
                if r.listed.len() < MAX_RANGES_PER_SESSION && self.total < MAX_RANGES_TOTAL {
                    r.listed.push((*first, *last));
                    self.total += 1;
                } else {
                    r.more_ranges += 1;
                    r.more_lines += last - first + 1;
                }
            }
        }
    }
}

/// What the report header says about the receiver.
pub(crate) struct ReceiverInfo<'a> {
    pub(crate) local: &'a str,
    pub(crate) started_us: u64,
    pub(crate) now_us: u64,
    pub(crate) reorder_window: std::time::Duration,
    pub(crate) dead_after: std::time::Duration,
}

fn fence(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    "`".repeat((longest + 1).max(3))
}

fn span(first_us: u64, last_us: u64) -> String {
    let secs = last_us.saturating_sub(first_us) as f64 / 1e6;
    format!(
        "{} to {} ({secs:.3} s)",
        rfc3339(first_us),
        rfc3339(last_us)
    )
}

/// Renders the report.
pub(crate) fn render(
    info: &ReceiverInfo<'_>,
    ledger: &Ledger,
    sessions: &[SessionSummary],
    stats: &Stats,
    counters: &Counters,
) -> String {
    let mut s = String::new();
    let lost_total: u64 = sessions.iter().map(|x| x.lost).sum();
    let _ = writeln!(s, "# ncu gap report\n");
    let _ = writeln!(
        s,
        "Receiver `ncu-recv` on `{}`, running since {}; report written {}.",
        info.local,
        rfc3339(info.started_us),
        rfc3339(info.now_us)
    );
    let _ = writeln!(
        s,
        "Settings: --reorder-window {:?}, --dead-after {:?}, recovery (NACK) {}.\n",
        info.reorder_window,
        info.dead_after,
        if counters.nack {
            "on for senders that offer it"
        } else {
            "off (--no-nack)"
        }
    );
    let _ = writeln!(
        s,
        "**{} sessions, {} lines lost in total, {} datagrams rejected.**\n",
        sessions.len(),
        lost_total,
        stats.corrupt_total()
    );

    let _ = writeln!(s, "## Sessions\n");
    if sessions.is_empty() {
        let _ = writeln!(s, "No session was seen.\n");
    }
    for x in sessions {
        session_section(&mut s, x, ledger);
    }
    if ledger.forgotten > 0 {
        let _ = writeln!(
            s,
            "(Lost ranges of {} older sessions were forgotten to bound memory.)\n",
            ledger.forgotten
        );
    }

    let _ = writeln!(s, "## Receiver counters\n");
    let _ = writeln!(
        s,
        "- datagrams received: {} ({} bytes)",
        stats.datagrams, stats.bytes
    );
    let _ = writeln!(
        s,
        "- sessions seen: {}; retired to make room: {}",
        stats.sessions, stats.retired
    );
    let _ = writeln!(
        s,
        "- datagrams rejected (corrupt): {}",
        stats.corrupt_total()
    );
    for (reason, n) in &stats.corrupt {
        let _ = writeln!(s, "  - {reason}: {n}");
    }
    match counters.kernel_drops {
        Some(n) => {
            let _ = writeln!(
                s,
                "- dropped by the kernel before ncu-recv could read them (receive buffer full): {n}"
            );
        }
        None => {
            let _ = writeln!(s, "- dropped by the kernel: unknown (counter not readable)");
        }
    }
    let _ = writeln!(
        s,
        "- taken off the socket by the receiving thread while ncu-recv was busy: {} datagrams",
        counters.ring_taken
    );
    if counters.ring_full > 0 {
        let _ = writeln!(
            s,
            "- ncu-recv's own receive ring was full {} times (the writing fell behind by {} MiB; \
             the socket's buffer took what came meanwhile)",
            counters.ring_full,
            crate::intake::RING_BYTES >> 20
        );
    }
    let _ = writeln!(
        s,
        "- receive buffer: {} KiB (as the kernel counts it, bookkeeping included)",
        counters.rcvbuf / 1024
    );
    if let Some(capped) = crate::net::rcvbuf_capped(counters.rcvbuf, counters.rcvbuf_wanted) {
        let _ = writeln!(s, "  - **{capped}**");
    }
    let _ = writeln!(s, "- {}", nack_text(stats, counters));
    match budget_text(stats, counters) {
        Some(t) => {
            let _ = writeln!(s, "- **{t}**");
        }
        None => {
            let _ = writeln!(
                s,
                "- memory budget (--max-held {} KiB): never full",
                counters.max_held / 1024
            );
        }
    }
    if counters.output_errors > 0 {
        let _ = writeln!(
            s,
            "- writes under --output-dir that failed: {}",
            counters.output_errors
        );
    }
    if counters.stdout_dropped > 0 {
        let _ = writeln!(
            s,
            "- events standard output could not take (dropped): {}",
            counters.stdout_dropped
        );
    }
    s
}

fn session_section(s: &mut String, x: &SessionSummary, ledger: &Ledger) {
    let info = &x.session;
    let _ = writeln!(
        s,
        "### {} — session {} ({}, from {})\n",
        escape::markdown(info.name().as_bytes()),
        info.id_hex(),
        info.kind.as_str(),
        info.addr
    );
    let _ = writeln!(
        s,
        "- time span: {}",
        span(x.first_received_at_us, x.last_received_at_us)
    );
    let _ = writeln!(s, "- lines received: {}", x.lines);
    if x.joined {
        let _ = writeln!(
            s,
            "- joined mid-way: yes, the receiver started after this sender; lines before {} \
             were sent before it listened",
            x.first_seq
        );
    } else {
        let _ = writeln!(
            s,
            "- joined mid-way: no (accounted from line {})",
            x.first_seq.max(1)
        );
    }
    let ranges = ledger.sessions.get(&info.id);
    let n_ranges = ranges.map_or(0, |r| r.listed.len() as u64 + r.more_ranges);
    let _ = writeln!(s, "- lost: {} lines in {} ranges", x.lost, n_ranges);
    let _ = writeln!(
        s,
        "- duplicates absorbed: {}; reordered: {}; late (after their gap was reported): {}",
        x.duplicates, x.reordered, x.late
    );
    if x.recovery {
        let _ = writeln!(
            s,
            "- recovery: offered by the sender; lines recovered (resent after a NACK): {}",
            x.recovered
        );
    } else {
        let _ = writeln!(
            s,
            "- recovery: not offered by the sender (no NACKs sent; lines recovered: {})",
            x.recovered
        );
    }
    if let Some(tail) = &x.netconsole {
        let _ = writeln!(s, "- {}", crate::output::story(&x.session, tail));
    }
    if x.kernel_overwritten > 0 {
        let ranges: Vec<String> = x
            .kernel_overwritten_ranges
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        let _ = writeln!(
            s,
            "- kernel records overwritten in the kernel's ring before ncu-send read them \
             (lost on the machine, not the network): {} ({})",
            x.kernel_overwritten,
            ranges.join(", ")
        );
    }
    if x.kernel_filtered > 0 {
        let _ = writeln!(
            s,
            "- kernel records left out by --kmsg-level: {} (on purpose, not losses)",
            x.kernel_filtered
        );
    }
    if x.kernel_seq_skipped > 0 {
        let _ = writeln!(
            s,
            "- kernel record numbers skipped: {} (may be records below the console loglevel, not losses)",
            x.kernel_seq_skipped
        );
    }
    let last = match &x.last_line {
        Some((seq, _, _)) => format!("line {seq}"),
        None => "no line".to_owned(),
    };
    let ended = match x.fate {
        Fate::Ended => match x.end_reason {
            Some(r) => format!("clean END ({r})"),
            None => "clean END".to_owned(),
        },
        Fate::Silent => format!(
            "**went silent** after {last}; last datagram at {}, nothing since",
            rfc3339(x.last_received_at_us)
        ),
        Fate::Restarted => format!(
            "**restarted**: a new session of the same sender began; this one's last datagram at {}, after {last}",
            rfc3339(x.last_received_at_us)
        ),
        Fate::Running => format!(
            "still running when the report was written (last datagram at {})",
            rfc3339(x.last_received_at_us)
        ),
    };
    let _ = writeln!(s, "- how it ended: {ended}\n");
    if let Some(r) = ranges.filter(|r| !r.listed.is_empty() || r.more_ranges > 0) {
        let _ = writeln!(s, "Lost lines:\n");
        for &(a, b) in &r.listed {
            if a == b {
                let _ = writeln!(s, "- line {a}");
            } else {
                let _ = writeln!(s, "- lines {a}-{b} ({})", b - a + 1);
            }
        }
        if r.more_ranges > 0 {
            let _ = writeln!(
                s,
                "- and {} more ranges ({} lines)",
                r.more_ranges, r.more_lines
            );
        }
        let _ = writeln!(s);
    }
    if matches!(x.fate, Fate::Silent | Fate::Restarted) {
        if let Some((seq, text, sent)) = &x.last_line {
            let shown = escape::field_cut(text, MAX_QUOTE);
            let f = fence(&shown);
            let sent = sent.map_or(String::new(), |t| format!(", sent at {}", rfc3339(t)));
            let _ = writeln!(
                s,
                "Last line received (line {seq}{sent}):\n\n{f}\n{shown}\n{f}\n"
            );
        }
    }
}

/// Writes the report to `path` (`-`: stderr) through a temporary file and a rename.
pub(crate) fn write(path: &Path, text: &str) -> io::Result<()> {
    if path == Path::new("-") {
        let mut err = io::stderr().lock();
        err.write_all(text.as_bytes())?;
        return err.flush();
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".to_owned());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use ncu_proto::event::{SessionInfo, SourceKind};
    use pulldown_cmark::{Event as Md, Parser, Tag, TagEnd};

    use super::*;
    use crate::escape::tests::Rng;

    fn summary(name: &[u8], last: &[u8], id: u64, fate: Fate) -> SessionSummary {
        let addr: SocketAddr = "127.0.0.1:4000".parse().expect("an address");
        SessionSummary {
            session: SessionInfo {
                id,
                // The reassembler keeps names as text: what the wire's UTF-8 check lets in.
                given_name: Some(String::from_utf8_lossy(name).into()),
                addr,
                kind: SourceKind::Ncu,
            },
            first_seq: 1,
            joined: false,
            lines: 3,
            lost: 1,
            kernel_seq_skipped: 0,
            kernel_overwritten: 0,
            kernel_overwritten_ranges: Vec::new(),
            kernel_filtered: 0,
            duplicates: 0,
            reordered: 0,
            late: 0,
            recovered: 0,
            recovery: true,
            fate,
            end_reason: None,
            first_received_at_us: 1_700_000_000_000_000,
            last_received_at_us: 1_700_000_001_000_000,
            last_line: Some((4, last.to_vec(), Some(1_700_000_000_500_000))),
            netconsole: None,
        }
    }

    fn report(sessions: &[SessionSummary]) -> String {
        let info = ReceiverInfo {
            local: "[::]:6666",
            started_us: 1_700_000_000_000_000,
            now_us: 1_700_000_002_000_000,
            reorder_window: std::time::Duration::from_millis(200),
            dead_after: std::time::Duration::from_secs(5),
        };
        let mut ledger = Ledger::default();
        for s in sessions {
            ledger.note(&Event::Gap {
                session: s.session.clone(),
                first: 2,
                last: 2,
                kind: GapKind::Lost,
            });
        }
        render(
            &info,
            &ledger,
            sessions,
            &Stats::default(),
            &Counters::default(),
        )
    }

    /// What a reader of the rendered report sees as its structure: headings with
    /// their level, list items, code blocks with their text's line count, and any
    /// link, image or HTML (never wanted).
    fn outline(markdown: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut code_lines: Option<usize> = None;
        for event in Parser::new(markdown) {
            match event {
                Md::Start(Tag::Heading { level, .. }) => out.push(format!("{level:?}")),
                Md::Start(Tag::Item) => out.push("item".to_owned()),
                Md::Start(Tag::CodeBlock(_)) => code_lines = Some(0),
                Md::Text(t) if code_lines.is_some() => {
                    *code_lines.as_mut().expect("in a code block") += t.matches('\n').count()
                }
                Md::End(TagEnd::CodeBlock) => {
                    out.push(format!("code {} lines", code_lines.take().unwrap_or(0)))
                }
                Md::Start(Tag::Link { .. } | Tag::Image { .. }) => out.push("LINK".to_owned()),
                Md::Html(_) | Md::InlineHtml(_) => out.push("HTML".to_owned()),
                _ => {}
            }
        }
        assert!(code_lines.is_none(), "a code block never closed");
        out
    }

    #[test]
    fn hostile_names_and_lines_never_change_the_reports_outline() {
        let good = [
            summary(b"db-7", b"kernel: Out of memory", 1, Fate::Silent),
            summary(b"web", b"bye", 2, Fate::Ended),
        ];
        let expected = outline(&report(&good));
        assert!(expected.iter().any(|h| h == "code 1 lines"), "{expected:?}");
        let seed = 0x5eed_0002;
        println!("seed {seed:#x}");
        let mut rng = Rng(seed);
        for _ in 0..3000 {
            let hostile = [
                summary(
                    &rng.hostile_bytes(48),
                    &rng.hostile_bytes(96),
                    1,
                    Fate::Silent,
                ),
                summary(
                    &rng.hostile_bytes(48),
                    &rng.hostile_bytes(96),
                    2,
                    Fate::Ended,
                ),
            ];
            let text = report(&hostile);
            assert_eq!(outline(&text), expected, "{text}");
        }
    }

    #[test]
    fn the_issues_injected_heading_stays_text() {
        let name = b"x\n## Injected \xe2\x80\x94 session 1";
        let text = report(&[summary(name, b"```\n# not a heading", 1, Fate::Silent)]);
        assert!(!text.contains("\n## Injected"), "{text}");
        assert_eq!(
            outline(&text),
            outline(&report(&[summary(b"x", b"y", 1, Fate::Silent)]))
        );
    }
}
