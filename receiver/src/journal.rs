//! `--journal-export PATH|-`: every line and event in the Journal Export Format
//! (systemd's `journal-export-format`), for `systemd-journal-remote -o FILE.journal -`,
//! which, unlike the native journal socket, lets each entry carry `_HOSTNAME`: the
//! sender's name. A field is `NAME=value` on a line, or, when the value holds a
//! newline, `NAME`, a newline, its length as 64-bit little endian, the bytes and a
//! newline; entries end with an empty line.
//!
//! Lines keep their bytes in `MESSAGE` (the evidence, binary form when needed); the
//! sender's name and other network text in fields of ncu's own are escaped
//! ([`crate::escape::field`]). Gap, silent, end and retired are entries of their
//! own with the fixed `MESSAGE_ID`s below.

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

fn common(out: &mut Vec<u8>, session: &SessionInfo, at_us: u64, received_us: u64) {
    field(out, "__REALTIME_TIMESTAMP", at_us.to_string().as_bytes());
    field(
        out,
        "_HOSTNAME",
        escape::field(session.name.as_bytes()).as_bytes(),
    );
    field(out, "NCU_SESSION", session.id_hex().as_bytes());
    field(out, "NCU_ADDR", session.addr.to_string().as_bytes());
    field(out, "NCU_SOURCE", session.kind.as_str().as_bytes());
    field(
        out,
        "NCU_RECEIVED_AT_USEC",
        received_us.to_string().as_bytes(),
    );
}

/// Appends the export entry of `event` to `out` (nothing for events of no session:
/// rejected datagrams are counted in the summary, not journaled one by one).
/// `now_us`: the receiver's clock, for events that carry no time of their own.
pub(crate) fn entry(event: &Event, now_us: u64, out: &mut Vec<u8>) {
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
            let at = sent_at_us.unwrap_or(*received_at_us);
            common(out, session, at, *received_at_us);
            field(out, "MESSAGE", text);
            let (priority, ident) = match kernel {
                Some(k) => (k.level.min(7), "kernel"),
                None => (PRIORITY_INFO, "ncu"),
            };
            field(out, "PRIORITY", priority.to_string().as_bytes());
            field(out, "SYSLOG_IDENTIFIER", ident.as_bytes());
            field(out, "NCU_SEQ", seq.to_string().as_bytes());
            if let Some(k) = kernel {
                field(out, "NCU_KERNEL_SEQ", k.seq.to_string().as_bytes());
                field(out, "NCU_KERNEL_TS_USEC", k.ts_usec.to_string().as_bytes());
                field(out, "SYSLOG_FACILITY", k.facility.to_string().as_bytes());
            }
            if let Some(t) = sent_at_us {
                field(out, "NCU_SENT_AT", output::rfc3339(*t).as_bytes());
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
            common(out, session, at, now_us);
            let marker = output::text_marker(event).unwrap_or_default();
            let message = marker.strip_prefix("### ncu: ").unwrap_or(&marker);
            field(out, "MESSAGE", message.as_bytes());
            field(out, "MESSAGE_ID", id.as_bytes());
            field(out, "PRIORITY", priority.to_string().as_bytes());
            field(out, "SYSLOG_IDENTIFIER", b"ncu-recv");
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ncu_proto::event::SourceKind;

    use super::*;

    #[test]
    fn fields_with_newlines_go_in_binary_form() {
        let session = Arc::new(SessionInfo {
            id: 1,
            name: "db\n7".to_owned(),
            addr: "127.0.0.1:9".parse().expect("an address"),
            kind: SourceKind::Ncu,
        });
        let mut out = Vec::new();
        entry(
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
