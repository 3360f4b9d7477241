//! `--journal-export PATH|-`: every line and event in the Journal Export Format
//! (systemd's `journal-export-format`), for `systemd-journal-remote -o FILE.journal -`,
//! which, unlike the native journal socket, lets each entry carry `_HOSTNAME`: the
//! sender's name. A field is `NAME=value` on a line, or, when the value holds a
//! newline, `NAME`, a newline, its length as 64-bit little endian, the bytes and a
//! newline; entries end with an empty line.
//!
//! Lines keep their bytes in `MESSAGE` (the evidence, binary form when needed);
//! `__REALTIME_TIMESTAMP` is when the line was sent (ncu senders say), else when it
//! arrived; `SYSLOG_IDENTIFIER` is the source's kind (`ncu`, `kernel`, `text`). The
//! sender's name and other network text in fields of ncu's own are escaped
//! ([`crate::escape::field`]). Gap, silent, end and retired are entries of their
//! own (`SYSLOG_IDENTIFIER=ncu-recv`, `NCU_EVENT`) with the fixed `MESSAGE_ID`s
//! below. An entry carries only what a reader needs: at a few hundred thousand lines
//! a second its bytes are most of the cost.

use ncu_proto::event::{Event, GapKind, SessionInfo};

use crate::escape;
use crate::output;

/// `MESSAGE_ID` of a gap: lines lost (`journalctl MESSAGE_ID=...`).
pub(crate) const MESSAGE_ID_GAP: &str = "ef2c491874354324a2151458ceaadcc2";
/// `MESSAGE_ID` of a sender gone silent: it died, or its network did.
pub(crate) const MESSAGE_ID_SILENT: &str = "13f3cc2063bb4f5d8fc980de5ca0244d";
/// `MESSAGE_ID` of a clean end.
pub(crate) const MESSAGE_ID_END: &str = "0239ccfcd7254f92a7fcf3e545ebf7e1";
/// `MESSAGE_ID` of a session retired to make room.
pub(crate) const MESSAGE_ID_RETIRED: &str = "57db4cbbba3145f3aedb9be3f442d6a8";

/// Syslog priorities.
const PRIORITY_CRIT: u8 = 2;
const PRIORITY_WARNING: u8 = 4;
const PRIORITY_NOTICE: u8 = 5;
const PRIORITY_INFO: u8 = 6;

fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// A field whose value is a number (never holds a newline). Written by hand, not
/// through `fmt`: an entry has up to eight of them, and at a few hundred thousand
/// lines a second `fmt` was a fifth of the receiver's time.
fn number(out: &mut Vec<u8>, name: &str, mut value: u64) {
    out.extend_from_slice(name.as_bytes());
    out.push(b'=');
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.push(b'\n');
}

/// Writes entries; keeps the fields of the last session written, which a stream of
/// lines from one sender repeats on every entry.
#[derive(Default)]
pub(crate) struct Journal {
    session: Option<(SessionInfo, Vec<u8>)>,
}

impl Journal {
    /// `__REALTIME_TIMESTAMP` (`at_us`) and the session's fields: `_HOSTNAME`,
    /// `NCU_SESSION`, `NCU_ADDR`.
    fn common(&mut self, out: &mut Vec<u8>, session: &SessionInfo, at_us: u64) {
        number(out, "__REALTIME_TIMESTAMP", at_us);
        match &self.session {
            Some((s, fields)) if s == session => out.extend_from_slice(fields),
            _ => {
                let mut fields = Vec::with_capacity(128);
                field(
                    &mut fields,
                    "_HOSTNAME",
                    escape::field(session.name().as_bytes()).as_bytes(),
                );
                field(&mut fields, "NCU_SESSION", session.id_hex().as_bytes());
                field(&mut fields, "NCU_ADDR", session.addr.to_string().as_bytes());
                out.extend_from_slice(&fields);
                self.session = Some((session.clone(), fields));
            }
        }
    }

    /// Appends the export entry of `event` to `out` (nothing for events of no session:
    /// rejected datagrams are counted in the summary, not journaled one by one).
    /// `now_us`: the receiver's clock, for events that carry no time of their own.
    pub(crate) fn entry(&mut self, event: &Event, now_us: u64, out: &mut Vec<u8>) {
        match event {
            Event::Line {
                session,
                seq,
                text,
                sent_at_us,
                received_at_us,
                kernel,
                partial,
                late,
                ..
            } => {
                // When it was sent, when the sender says so (ncu), else when it arrived.
                let at = sent_at_us.unwrap_or(*received_at_us);
                self.common(out, session, at);
                field(out, "MESSAGE", text);
                let priority = kernel.as_ref().map_or(PRIORITY_INFO, |k| k.level.min(7));
                number(out, "PRIORITY", u64::from(priority));
                // The source's kind: ncu, kernel, text.
                field(out, "SYSLOG_IDENTIFIER", session.kind.as_str().as_bytes());
                number(out, "NCU_SEQ", *seq);
                if let Some(k) = kernel {
                    number(out, "NCU_KERNEL_SEQ", k.seq);
                    number(out, "NCU_KERNEL_TS_USEC", k.ts_usec);
                    number(out, "SYSLOG_FACILITY", u64::from(k.facility));
                }
                if *partial {
                    field(out, "NCU_PARTIAL", b"1");
                }
                if *late {
                    field(out, "NCU_LATE", b"1");
                }
            }
            Event::Gap { session, .. }
            | Event::Silent { session, .. }
            | Event::End { session, .. }
            | Event::Retired { session } => {
                let (id, priority) = match event {
                    Event::Gap {
                        kind: GapKind::Lost,
                        ..
                    } => (MESSAGE_ID_GAP, PRIORITY_WARNING),
                    Event::Gap { .. } => (MESSAGE_ID_GAP, PRIORITY_INFO),
                    Event::Silent { .. } => (MESSAGE_ID_SILENT, PRIORITY_CRIT),
                    Event::End { lost, .. } if *lost > 0 => (MESSAGE_ID_END, PRIORITY_WARNING),
                    Event::End { .. } => (MESSAGE_ID_END, PRIORITY_NOTICE),
                    _ => (MESSAGE_ID_RETIRED, PRIORITY_WARNING),
                };
                let at = match event {
                    Event::Silent {
                        last_received_at_us,
                        ..
                    } => *last_received_at_us,
                    _ => now_us,
                };
                self.common(out, session, at);
                let marker = output::text_marker(event).unwrap_or_default();
                let message = marker.strip_prefix("### ncu: ").unwrap_or(&marker);
                field(out, "MESSAGE", message.as_bytes());
                field(out, "MESSAGE_ID", id.as_bytes());
                number(out, "PRIORITY", u64::from(priority));
                field(out, "SYSLOG_IDENTIFIER", b"ncu-recv");
                field(out, "NCU_EVENT", event_name(event).as_bytes());
                match event {
                    Event::Gap {
                        first, last, kind, ..
                    } => {
                        field(out, "NCU_GAP_FIRST", first.to_string().as_bytes());
                        field(out, "NCU_GAP_LAST", last.to_string().as_bytes());
                        field(out, "NCU_GAP_KIND", kind.as_str().as_bytes());
                    }
                    Event::Silent {
                        last_seq,
                        last_text,
                        reason,
                        ..
                    } => {
                        field(out, "NCU_LAST_SEQ", last_seq.to_string().as_bytes());
                        if let Some(t) = last_text {
                            field(out, "NCU_LAST_TEXT", escape::field(t).as_bytes());
                        }
                        field(out, "NCU_REASON", reason.as_str().as_bytes());
                    }
                    Event::End {
                        last_seq,
                        lines,
                        lost,
                        reason,
                        ..
                    } => {
                        field(out, "NCU_LAST_SEQ", last_seq.to_string().as_bytes());
                        field(out, "NCU_LINES", lines.to_string().as_bytes());
                        field(out, "NCU_LOST", lost.to_string().as_bytes());
                        field(
                            out,
                            "NCU_REASON",
                            output::end_reason_name(*reason).as_bytes(),
                        );
                    }
                    _ => {}
                }
            }
            Event::Start { .. } | Event::Resumed { .. } | Event::Corrupt { .. } => return,
        }
        out.push(b'\n');
    }
}

fn event_name(event: &Event) -> &'static str {
    match event {
        Event::Gap { .. } => "gap",
        Event::Silent { .. } => "silent",
        Event::End { .. } => "end",
        Event::Retired { .. } => "retired",
        _ => "",
    }
}

#[cfg(test)]
mod tests {

    use ncu_proto::event::SourceKind;

    use super::*;

    #[test]
    fn numbers_as_fmt_writes_them() {
        for v in [0, 1, 9, 10, 99, 100, 12_345, u64::MAX, u64::MAX / 7] {
            let mut out = Vec::new();
            number(&mut out, "N", v);
            assert_eq!(out, format!("N={v}\n").into_bytes());
        }
    }

    #[test]
    fn fields_with_newlines_go_in_binary_form() {
        let session = SessionInfo {
            id: 1,
            given_name: Some("db\n7".into()),
            addr: "127.0.0.1:9".parse().expect("an address"),
            kind: SourceKind::Ncu,
        };
        let mut out = Vec::new();
        Journal::default().entry(
            &Event::Line {
                session,
                seq: 3,
                text: b"two\nlines \xff".to_vec(),
                partial: false,
                continuation: false,
                late: false,
                sent_at_us: Some(5),
                received_at_us: 6,
                kernel: None,
            },
            7,
            &mut out,
        );
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("__REALTIME_TIMESTAMP=5\n_HOSTNAME=db\\x0a7\n"),
            "{text}"
        );
        let mut want = b"MESSAGE\n".to_vec();
        want.extend_from_slice(&11u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines \xff\n");
        assert!(out.windows(want.len()).any(|w| w == want), "{text}");
        assert!(out.ends_with(b"\n\n"));
    }
}
