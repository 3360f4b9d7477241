//! `--json`: every event, the exit summary and the output-dropped marker as typed
//! structs that borrow from the event, serialized one way (serde). Lines that are not
//! UTF-8 go as base64 in `bytes` (`last_bytes` for a silent session's last line).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use base64::Engine as _;
use ncu_proto::event::{Event, KernelMeta, SessionInfo, SessionSummary};
use ncu_proto::reassembler::Stats;
use ncu_proto::wire::EndReason;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::output::{end_reason_name, rfc3339_into, story, Counters, RFC3339_LEN};

/// A session id as CONTRACT.md prints it: 16 lowercase hex digits (written
/// without fmt: every line carries one).
struct Hex(u64);

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = DIGITS[(self.0 >> (60 - 4 * i) & 0xf) as usize];
        }
        s.serialize_str(std::str::from_utf8(&out).unwrap_or_default())
    }
}

/// Writes `v` in decimal at `out[at..]`; returns where it ended.
fn put_decimal(mut v: u32, out: &mut [u8], at: usize) -> usize {
    let mut digits = [0u8; 10];
    let mut d = 0;
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for (i, &c) in digits[..d].iter().rev().enumerate() {
        out[at + i] = c;
    }
    at + d
}

/// A source address; an IPv4 one written without fmt (every line carries one).
struct Addr(SocketAddr);

impl Serialize for Addr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let SocketAddr::V4(v4) = self.0 else {
            return s.collect_str(&self.0);
        };
        let mut out = [0u8; 21];
        let mut n = put_ipv4(*v4.ip(), &mut out);
        out[n] = b':';
        n = put_decimal(u32::from(v4.port()), &mut out, n + 1);
        s.serialize_str(std::str::from_utf8(&out[..n]).unwrap_or_default())
    }
}

/// Writes `ip` dotted at the start of `out` (15 bytes at most); returns its length.
fn put_ipv4(ip: std::net::Ipv4Addr, out: &mut [u8]) -> usize {
    let mut n = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out[n] = b'.';
            n += 1;
        }
        n = put_decimal(u32::from(octet), out, n);
    }
    n
}

/// A sender's name: the one it gave, else its IP (an IPv4 one written without
/// fmt: every line of a fleet's kernels carries one).
struct Sender<'a>(&'a SessionInfo);

impl Serialize for Sender<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (&self.0.given_name, self.0.addr) {
            (Some(name), _) => s.serialize_str(name),
            (None, SocketAddr::V4(v4)) => {
                let mut out = [0u8; 15];
                let n = put_ipv4(*v4.ip(), &mut out);
                s.serialize_str(std::str::from_utf8(&out[..n]).unwrap_or_default())
            }
            (None, addr) => s.collect_str(&addr.ip()),
        }
    }
}

/// RFC 3339 UTC with microseconds.
struct Time(u64);

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(rfc3339_into(self.0, &mut [0; RFC3339_LEN]))
    }
}

/// The fields every event about a session has.
#[derive(Serialize)]
struct Who<'a> {
    sender: Sender<'a>,
    addr: Addr,
    session: Hex,
}

fn who(s: &SessionInfo) -> Who<'_> {
    Who {
        sender: Sender(s),
        addr: Addr(s.addr),
        session: Hex(s.id),
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `text` when UTF-8, else `bytes` (base64).
fn text_or_bytes(bytes: &[u8]) -> (Option<&str>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (Some(s), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    }
}

/// The `kernel` object: the record's numbers, then its `KEY=VALUE` fields (those
/// named like a number above are left out).
struct Kernel<'a>(&'a KernelMeta);

/// What the kernel's netconsole delivered after ncu-send's last record.
#[derive(Serialize)]
struct Tail {
    last_kmsg_seq: Option<u64>,
    first: u64,
    last: u64,
    last_text: String,
    panic: Option<String>,
    missing: u64,
}

impl<'a> Kernel<'a> {
    /// The record's `KEY=VALUE` fields as the object shows them: the first of each
    /// key, none named like one of the numbers.
    fn fields(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        const OWN: [&str; 6] = ["level", "facility", "seq", "ts_usec", "cont", "msgid"];
        let fields = &self.0.fields;
        fields
            .iter()
            .enumerate()
            .filter_map(move |(i, (key, value))| {
                let first = !fields[..i].iter().any(|(k, _)| k == key);
                (first && !OWN.contains(&key.as_str())).then_some((key.as_str(), value.as_str()))
            })
    }
}

impl Serialize for Kernel<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let k = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("level", &k.level)?;
        m.serialize_entry("facility", &k.facility)?;
        m.serialize_entry("seq", &k.seq)?;
        m.serialize_entry("ts_usec", &k.ts_usec)?;
        m.serialize_entry("cont", &k.cont)?;
        if let Some(id) = k.msgid {
            m.serialize_entry("msgid", &id)?;
        }
        for (key, value) in self.fields() {
            m.serialize_entry(key, value)?;
        }
        m.end()
    }
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Json<'a> {
    Start {
        #[serde(flatten)]
        who: Who<'a>,
        first_seq: u64,
        source: &'static str,
        #[serde(skip_serializing_if = "is_false")]
        joined: bool,
    },
    Line {
        #[serde(flatten)]
        who: Who<'a>,
        seq: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        bytes: Option<String>,
        sent_at: Option<Time>,
        received_at: Time,
        #[serde(skip_serializing_if = "is_false")]
        partial: bool,
        #[serde(skip_serializing_if = "is_false")]
        late: bool,
        #[serde(skip_serializing_if = "is_false")]
        continuation: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        kernel: Option<Kernel<'a>>,
        /// `"netconsole"`: only the kernel's netconsole delivered it.
        #[serde(skip_serializing_if = "Option::is_none")]
        via: Option<&'static str>,
    },
    Gap {
        #[serde(flatten)]
        who: Who<'a>,
        first: u64,
        last: u64,
        count: u64,
        kind: &'static str,
    },
    Silent {
        #[serde(flatten)]
        who: Who<'a>,
        last_seq: u64,
        /// Absent when the last line is binary (then `last_bytes`); null without one.
        #[serde(skip_serializing_if = "Option::is_none")]
        last_text: Option<Option<&'a str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_bytes: Option<String>,
        last_sent_at: Option<Time>,
        last_received_at: Time,
        reason: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        netconsole: Option<Tail>,
        /// The sentence for the ticket (`--kmsg --netconsole` senders).
        #[serde(skip_serializing_if = "Option::is_none")]
        story: Option<String>,
    },
    Resumed {
        #[serde(flatten)]
        who: Who<'a>,
        seq: u64,
    },
    End {
        #[serde(flatten)]
        who: Who<'a>,
        last_seq: u64,
        lines: u64,
        lost: u64,
        reason: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        signal: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<i64>,
    },
    Corrupt {
        addr: Addr,
        reason: &'static str,
        #[serde(skip_serializing_if = "is_zero")]
        suppressed: u64,
    },
    Retired {
        #[serde(flatten)]
        who: Who<'a>,
    },
    OutputDropped {
        count: u64,
        error: &'a str,
    },
}

fn json_of(event: &Event) -> Json<'_> {
    match event {
        Event::Start {
            session,
            first_seq,
            joined,
        } => Json::Start {
            who: who(session),
            first_seq: *first_seq,
            source: session.kind.as_str(),
            joined: *joined,
        },
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
            let (text, bytes) = text_or_bytes(text);
            Json::Line {
                who: who(session),
                seq: *seq,
                text,
                bytes,
                sent_at: sent_at_us.map(Time),
                received_at: Time(*received_at_us),
                partial: *partial,
                late: *late,
                continuation: *continuation,
                kernel: kernel.as_deref().map(Kernel),
                via: kernel
                    .as_deref()
                    .filter(|k| k.via_netconsole)
                    .map(|_| "netconsole"),
            }
        }
        Event::Gap {
            session,
            first,
            last,
            kind,
        } => Json::Gap {
            who: who(session),
            first: *first,
            last: *last,
            count: last - first + 1,
            kind: kind.as_str(),
        },
        Event::Silent {
            session,
            last_seq,
            last_text,
            last_sent_at_us,
            last_received_at_us,
            reason,
            netconsole,
        } => {
            let (text, bytes) = match last_text {
                None => (Some(None), None),
                Some(t) => match text_or_bytes(t) {
                    (Some(s), _) => (Some(Some(s)), None),
                    (None, b) => (None, b),
                },
            };
            Json::Silent {
                who: who(session),
                last_seq: *last_seq,
                last_text: text,
                last_bytes: bytes,
                last_sent_at: last_sent_at_us.map(Time),
                last_received_at: Time(*last_received_at_us),
                reason: reason.as_str(),
                netconsole: netconsole.as_deref().map(|t| Tail {
                    last_kmsg_seq: t.last_kmsg.map(|(k, _)| k),
                    first: t.first,
                    last: t.last,
                    last_text: String::from_utf8_lossy(&t.last_text).into_owned(),
                    panic: t
                        .panic
                        .as_deref()
                        .map(|p| String::from_utf8_lossy(p).into_owned()),
                    missing: t.missing,
                }),
                story: netconsole.as_deref().map(|t| story(session, t)),
            }
        }
        Event::Resumed { session, seq } => Json::Resumed {
            who: who(session),
            seq: *seq,
        },
        Event::End {
            session,
            last_seq,
            lines,
            lost,
            reason,
        } => {
            let (signal, status) = match reason {
                EndReason::Eof => (None, None),
                EndReason::Signal(n) | EndReason::CommandSignal(n) => (Some(i64::from(*n)), None),
                EndReason::Exit(n) => (None, Some(i64::from(*n))),
            };
            Json::End {
                who: who(session),
                last_seq: *last_seq,
                lines: *lines,
                lost: *lost,
                reason: end_reason_name(*reason),
                signal,
                status,
            }
        }
        Event::Corrupt {
            addr,
            reason,
            suppressed,
        } => Json::Corrupt {
            addr: Addr(*addr),
            reason: reason.as_str(),
            suppressed: *suppressed,
        },
        Event::Retired { session } => Json::Retired { who: who(session) },
    }
}

fn write_line(value: &impl Serialize, out: &mut Vec<u8>) {
    // Into a Vec, of types whose serialization cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
    out.push(b'\n');
}

/// Appends the JSON line of an event to `out`.
pub(crate) fn event(event: &Event, out: &mut Vec<u8>) {
    match event {
        Event::Line { .. } => line_event(event, out),
        _ => write_line(&json_of(event), out),
    }
}

/// Appends `v` as JSON (of types whose serialization cannot fail).
fn value(out: &mut Vec<u8>, v: &impl Serialize) {
    let _ = serde_json::to_writer(&mut *out, v);
}

/// Appends a `line` event's JSON line, field by field: the bytes serde writes for
/// [`Json::Line`] (a test compares them), without the map its flattened fields
/// make serde build, and with the keys written as they are instead of escaped
/// one character at a time. Every record goes through here: at 150,000 records/s
/// the derived form took some 14% of the receiver's CPU.
fn line_event(event: &Event, out: &mut Vec<u8>) {
    let Event::Line {
        session,
        seq,
        text,
        partial,
        continuation,
        late,
        sent_at_us,
        received_at_us,
        kernel,
    } = event
    else {
        return;
    };
    out.extend_from_slice(b"{\"event\":\"line\",\"sender\":");
    value(out, &Sender(session));
    out.extend_from_slice(b",\"addr\":");
    value(out, &Addr(session.addr));
    out.extend_from_slice(b",\"session\":");
    value(out, &Hex(session.id));
    out.extend_from_slice(b",\"seq\":");
    value(out, seq);
    let (text, bytes) = text_or_bytes(text);
    if let Some(text) = text {
        out.extend_from_slice(b",\"text\":");
        value(out, &text);
    }
    if let Some(bytes) = bytes {
        out.extend_from_slice(b",\"bytes\":");
        value(out, &bytes);
    }
    out.extend_from_slice(b",\"sent_at\":");
    value(out, &sent_at_us.map(Time));
    out.extend_from_slice(b",\"received_at\":");
    value(out, &Time(*received_at_us));
    for (set, key) in [
        (*partial, &b",\"partial\":true"[..]),
        (*late, b",\"late\":true"),
        (*continuation, b",\"continuation\":true"),
    ] {
        if set {
            out.extend_from_slice(key);
        }
    }
    if let Some(k) = kernel.as_deref() {
        out.extend_from_slice(b",\"kernel\":{\"level\":");
        value(out, &k.level);
        out.extend_from_slice(b",\"facility\":");
        value(out, &k.facility);
        out.extend_from_slice(b",\"seq\":");
        value(out, &k.seq);
        out.extend_from_slice(b",\"ts_usec\":");
        value(out, &k.ts_usec);
        out.extend_from_slice(b",\"cont\":");
        value(out, &k.cont);
        if let Some(id) = k.msgid {
            out.extend_from_slice(b",\"msgid\":");
            value(out, &id);
        }
        for (key, v) in Kernel(k).fields() {
            out.push(b',');
            value(out, &key);
            out.push(b':');
            value(out, &v);
        }
        out.push(b'}');
        if k.via_netconsole {
            out.extend_from_slice(b",\"via\":\"netconsole\"");
        }
    }
    out.extend_from_slice(b"}\n");
}

/// The JSON line put where standard output dropped `count` events.
pub(crate) fn output_dropped(count: u64, error: &str, out: &mut Vec<u8>) {
    write_line(&Json::OutputDropped { count, error }, out);
}

#[derive(Serialize)]
struct SessionJson<'a> {
    #[serde(flatten)]
    who: Who<'a>,
    source: &'static str,
    lines: u64,
    lost: u64,
    duplicates: u64,
    reordered: u64,
    late: u64,
    recovered: u64,
    recovery: bool,
    fate: &'static str,
    first_seq: u64,
    joined: bool,
    #[serde(skip_serializing_if = "is_zero")]
    kernel_seq_skipped: u64,
    #[serde(skip_serializing_if = "is_zero")]
    kernel_overwritten: u64,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    kernel_overwritten_ranges: &'a [(u64, u64)],
    #[serde(skip_serializing_if = "is_zero")]
    kernel_filtered: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_reason: Option<&'static str>,
    first_received_at: Time,
    last_received_at: Time,
}

#[derive(Serialize)]
struct SummaryJson<'a> {
    event: &'static str,
    sessions: Vec<SessionJson<'a>>,
    corrupt: &'a BTreeMap<&'static str, u64>,
    corrupt_total: u64,
    datagrams: u64,
    bytes: u64,
    sessions_seen: u64,
    retired: u64,
    kernel_drops: Option<u64>,
    ring_taken: u64,
    ring_full: u64,
    output_errors: u64,
    stdout_dropped: u64,
    nack: bool,
    nacks_sent: u64,
    nacks_suppressed: u64,
    nacks_dropped: u64,
    nack_send_errors: u64,
    max_held: usize,
    held_limit_reached: u64,
}

/// Appends the exit summary's JSON line to `out`.
pub(crate) fn summary(
    sessions: &[SessionSummary],
    stats: &Stats,
    counters: &Counters,
    out: &mut Vec<u8>,
) {
    let sessions = sessions
        .iter()
        .map(|s| SessionJson {
            who: who(&s.session),
            source: s.session.kind.as_str(),
            lines: s.lines,
            lost: s.lost,
            duplicates: s.duplicates,
            reordered: s.reordered,
            late: s.late,
            recovered: s.recovered,
            recovery: s.recovery,
            fate: s.fate.as_str(),
            first_seq: s.first_seq,
            joined: s.joined,
            kernel_seq_skipped: s.kernel_seq_skipped,
            kernel_overwritten: s.kernel_overwritten,
            kernel_overwritten_ranges: &s.kernel_overwritten_ranges,
            kernel_filtered: s.kernel_filtered,
            end_reason: s.end_reason.map(end_reason_name),
            first_received_at: Time(s.first_received_at_us),
            last_received_at: Time(s.last_received_at_us),
        })
        .collect();
    write_line(
        &SummaryJson {
            event: "summary",
            sessions,
            corrupt: &stats.corrupt,
            corrupt_total: stats.corrupt_total(),
            datagrams: stats.datagrams,
            bytes: stats.bytes,
            sessions_seen: stats.sessions,
            retired: stats.retired,
            kernel_drops: counters.kernel_drops,
            ring_taken: counters.ring_taken,
            ring_full: counters.ring_full,
            output_errors: counters.output_errors,
            stdout_dropped: counters.stdout_dropped,
            nack: counters.nack,
            nacks_sent: counters.nacks_sent,
            nacks_suppressed: stats.nacks_suppressed,
            nacks_dropped: counters.nacks_dropped,
            nack_send_errors: counters.nack_send_errors,
            max_held: counters.max_held,
            held_limit_reached: stats.held_limit_reached,
        },
        out,
    );
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use chrono::{DateTime, SecondsFormat};

    use super::*;
    use crate::escape::tests::Rng;

    fn json<T: Serialize>(v: T) -> String {
        serde_json::to_string(&v).unwrap()
    }

    /// A generator seeded from the clock, and the seed (printed).
    fn clock_seeded() -> (u64, Rng) {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        eprintln!("seed {seed}");
        (seed, Rng(seed))
    }

    /// The written-without-fmt fields against what `Display` and chrono write, for
    /// random values (seed printed) and the edges.
    #[test]
    fn ids_addresses_names_and_times_as_fmt_and_chrono_write_them() {
        let (_, mut rng) = clock_seeded();
        let mut next = move || rng.next();
        let mut ids = vec![0, 1, u64::MAX, 0x6b09_49c6_d17b_d5c1];
        let mut addrs = vec![
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, 65535)),
            "[fe80::1%2]:6665".parse().unwrap(),
        ];
        // 1970, a day's last microsecond, 2026, year 9999's last second.
        let mut times = vec![
            0,
            86_399_999_999,
            1_796_000_000_123_456,
            253_402_300_799_999_999,
        ];
        for _ in 0..20_000 {
            ids.push(next());
            let r = next();
            addrs.push(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(r as u32),
                (r >> 32) as u16,
            )));
            times.push(next() % 253_402_300_800_000_000);
        }
        for id in ids {
            assert_eq!(json(Hex(id)), format!("\"{id:016x}\""));
        }
        for addr in addrs {
            assert_eq!(json(Addr(addr)), format!("\"{addr}\""));
            let mut info = SessionInfo {
                id: 1,
                given_name: None,
                addr,
                kind: ncu_proto::event::SourceKind::KernelExtended,
            };
            assert_eq!(json(Sender(&info)), format!("\"{}\"", addr.ip()));
            assert_eq!(json(Sender(&info)), json(info.name()));
            info.given_name = Some("db-7".into());
            assert_eq!(json(Sender(&info)), "\"db-7\"");
        }
        for us in times {
            let chrono = DateTime::from_timestamp_micros(us as i64)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Micros, true);
            assert_eq!(json(Time(us)), format!("\"{chrono}\""), "{us}");
        }
        assert_eq!(json(Time(u64::MAX)), "\"1970-01-01T00:00:00.000000Z\"");
    }

    /// The line event written field by field against the derived form, byte for
    /// byte, for random events (seed printed): names and text with every kind of
    /// byte, IPv4 and IPv6, text that is not UTF-8, kernel fields named twice or
    /// like a number, every flag.
    #[test]
    fn line_events_are_written_as_the_derived_form_writes_them() {
        let (seed, mut rng) = clock_seeded();
        let mut next = move || rng.next();
        let bytes = |next: &mut dyn FnMut() -> u64, n: u64| -> Vec<u8> {
            let pool: &[u8] = b"ab \"\\\n\t\x01\x7f=/\xc3\xa9\xff";
            (0..next() % n)
                .map(|_| pool[(next() % pool.len() as u64) as usize])
                .collect()
        };
        for _ in 0..20_000 {
            let addr: SocketAddr = if next() % 2 == 0 {
                SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(next() as u32),
                    next() as u16,
                ))
            } else {
                "[fe80::1%2]:6665".parse().unwrap()
            };
            let given_name = (next() % 2 == 0).then(|| {
                String::from_utf8_lossy(&bytes(&mut next, 12))
                    .into_owned()
                    .into()
            });
            let kernel = (next() % 2 == 0).then(|| {
                let keys = ["SUBSYSTEM", "DEVICE", "seq", "level", "msgid", "X"];
                let fields = (0..next() % 5)
                    .map(|_| {
                        let key = keys[(next() % keys.len() as u64) as usize].to_owned();
                        (
                            key,
                            String::from_utf8_lossy(&bytes(&mut next, 8)).into_owned(),
                        )
                    })
                    .collect();
                Box::new(KernelMeta {
                    level: (next() % 8) as u8,
                    facility: (next() % 24) as u8,
                    seq: next(),
                    ts_usec: next(),
                    cont: next() % 2 == 0,
                    msgid: (next() % 2 == 0).then(&mut next),
                    fields,
                    via_netconsole: next() % 2 == 0,
                })
            });
            let event = Event::Line {
                session: SessionInfo {
                    id: next(),
                    given_name,
                    addr,
                    kind: ncu_proto::event::SourceKind::KernelExtended,
                },
                seq: next(),
                text: bytes(&mut next, 40),
                partial: next() % 2 == 0,
                continuation: next() % 2 == 0,
                late: next() % 2 == 0,
                sent_at_us: (next() % 2 == 0).then(|| next() % 253_402_300_800_000_000),
                received_at_us: next() % 253_402_300_800_000_000,
                kernel,
            };
            let mut direct = Vec::new();
            super::event(&event, &mut direct);
            let mut derived = Vec::new();
            write_line(&json_of(&event), &mut derived);
            assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&derived),
                "seed {seed}"
            );
        }
    }
}
