//! The sender's side of the wire format, without IO: numbers lines, packs lines that
//! are already waiting together into one datagram, cuts long lines into fragments.
//!
//! The caller decides *when* datagrams leave: after handing the framer every complete
//! line it has read so far, it calls [`Framer::flush`] and sends what is in the
//! [`Outbox`]. Nothing makes a line wait for a later one.
//!
//! ```
//! use ncu_proto::framer::{Framer, Outbox};
//! use ncu_proto::wire::{EndReason, Payload, Repr};
//!
//! let mut framer = Framer::new(0x1234, "web", 1400);
//! let mut outbox = Outbox::default();
//! let now_us = 1_700_000_000_000_000;
//! framer.hello(1, now_us, "stdin", now_us, &mut outbox);
//! framer.push_line(0, b"first line", now_us, &mut outbox);
//! framer.push_line(0, b"second line", now_us, &mut outbox);
//! framer.flush(&mut outbox);
//! framer.end(EndReason::Eof, now_us, &mut outbox);
//! let datagrams: Vec<&[u8]> = outbox.datagrams().collect();
//! assert_eq!(datagrams.len(), 3); // HELLO, one DATA with both lines, END
//! let data = Repr::parse(datagrams[1])?;
//! assert!(matches!(data.payload, Payload::Lines { count: 2, .. }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::wire::{
    self, EndReason, Header, Kind, Payload, Repr, FRAGMENT_HEADER_LEN, HEADER_LEN,
    LINE_RECORD_HEADER_LEN, MAX_DATAGRAM, MAX_NAME_LEN, MIN_DATAGRAM,
};

/// HELLO payload bytes besides the name and source: pid, start time, two lengths.
const HELLO_FIXED_LEN: usize = 4 + 8 + 1 + 2;

/// Datagrams ready to send, back to back in one buffer (reused between batches).
#[derive(Debug, Default, Clone)]
pub struct Outbox {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Outbox {
    /// The finished datagrams, oldest first.
    pub fn datagrams(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.ends.iter().enumerate().map(move |(i, &end)| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            &self.bytes[start..end]
        })
    }
    /// Appends a finished datagram (e.g. one to resend).
    pub fn push(&mut self, datagram: &[u8]) {
        let start = self.finished_len();
        // A datagram still being built stays last: put this one before it.
        self.bytes.splice(start..start, datagram.iter().copied());
        self.ends.push(start + datagram.len());
    }

    /// How many finished datagrams wait.
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    /// No finished datagram waits.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    /// Forgets the finished datagrams (after sending them), keeping the allocation.
    /// A datagram still being built by the framer is kept.
    pub fn clear(&mut self) {
        let done = self.ends.last().copied().unwrap_or(0);
        self.bytes.drain(..done);
        self.ends.clear();
    }
    /// The finished datagrams, back to back (see [`Outbox::ends`]).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.finished_len()]
    }
    /// Where each finished datagram ends in [`Outbox::bytes`].
    pub fn ends(&self) -> &[usize] {
        &self.ends
    }
    /// Takes the buffer of finished datagrams whole, without copying them (e.g. to
    /// keep them for resending), and goes on with `replacement` (cleared) as an
    /// empty outbox. A datagram still being built by the framer moves into
    /// `replacement`. Read [`Outbox::ends`] first: the taken buffer holds the
    /// datagrams back to back, from offset 0.
    pub fn take_buffer(&mut self, mut replacement: Vec<u8>) -> Vec<u8> {
        let done = self.finished_len();
        replacement.clear();
        replacement.extend_from_slice(&self.bytes[done..]);
        self.bytes.truncate(done);
        self.ends.clear();
        std::mem::replace(&mut self.bytes, replacement)
    }
    fn finished_len(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }
}

/// Numbers and frames one session's lines.
#[derive(Debug, Clone)]
pub struct Framer {
    session: u64,
    name: String,
    max_datagram: usize,
    /// Sequence number the next line gets.
    next_seq: u64,
    /// Counter the next datagram gets.
    next_counter: u32,
    /// Lines in the DATA datagram being built (0: none being built).
    open_lines: u16,
    /// Pad datagrams closed for lack of room to exactly `max_datagram`.
    pad_full: bool,
    /// Flags set on every datagram (FLAG_RECOVERY).
    flags: u8,
    /// Leave the CRC of DATA datagrams zero (they are sealed next, which writes it).
    sealed_next: bool,
}

impl Framer {
    /// A framer for session `session`, sending datagrams of at most `max_datagram`
    /// bytes (clamped to [`MIN_DATAGRAM`]..=[`MAX_DATAGRAM`]). A name longer than
    /// [`MAX_NAME_LEN`] bytes, or too long for a HELLO in `max_datagram`, is cut at a
    /// character boundary.
    pub fn new(session: u64, name: &str, max_datagram: usize) -> Framer {
        let max_datagram = max_datagram.clamp(MIN_DATAGRAM, MAX_DATAGRAM);
        let mut cut = name
            .len()
            .min(MAX_NAME_LEN)
            .min(max_datagram - HEADER_LEN - HELLO_FIXED_LEN);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        Framer {
            session,
            name: name[..cut].to_owned(),
            max_datagram,
            next_seq: 1,
            next_counter: 0,
            open_lines: 0,
            pad_full: false,
            flags: 0,
            sealed_next: false,
        }
    }

    /// Pads every DATA datagram closed because the next line did not fit to exactly
    /// [`Framer::max_datagram`] bytes (with a [`wire::LINE_PADDING`] record), so that
    /// runs of full datagrams have equal sizes (for UDP GSO). Off by default.
    pub fn set_pad_full(&mut self, pad: bool) {
        self.pad_full = pad;
    }

    /// For a sender that seals every datagram before it is sent: DATA datagrams
    /// are left with a zero CRC, since [`seal`](crate::seal::Sealer::seal) writes
    /// the sealed datagram's own and never reads the plain one's. Saves one CRC pass
    /// over every byte sent. Off by default: unsealed, such datagrams are corrupt.
    pub fn set_sealed_next(&mut self, on: bool) {
        self.sealed_next = on;
    }

    /// Marks every datagram from now on with [`wire::FLAG_RECOVERY`]: this sender
    /// keeps a resend ring and answers NACKs.
    pub fn set_recovery(&mut self, on: bool) {
        if on {
            self.flags |= wire::FLAG_RECOVERY;
        } else {
            self.flags &= !wire::FLAG_RECOVERY;
        }
    }

    /// The session id.
    pub fn session(&self) -> u64 {
        self.session
    }
    /// The sender name as it goes on the wire.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// How many lines have been numbered so far (the last line's sequence number).
    pub fn lines_sent(&self) -> u64 {
        self.next_seq - 1
    }
    /// The largest datagram this framer builds.
    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }
    /// The longest line that still fits in one DATA datagram as a whole line.
    pub fn max_whole_line(&self) -> usize {
        (self.max_datagram - HEADER_LEN - LINE_RECORD_HEADER_LEN).min(usize::from(u16::MAX))
    }

    fn header(&mut self, seq: u64, now_us: u64) -> Header {
        let counter = self.next_counter;
        self.next_counter = self.next_counter.wrapping_add(1);
        Header {
            session: self.session,
            seq,
            sent_at_us: now_us,
            counter,
        }
    }

    fn emit(&mut self, seq: u64, now_us: u64, payload: Payload<'_>, outbox: &mut Outbox) {
        self.flush(outbox);
        let header = self.header(seq, now_us);
        let start = outbox.bytes.len();
        Repr { header, payload }.emit(&mut outbox.bytes);
        if self.flags != 0 {
            let mut view = wire::Datagram::new_unchecked(&mut outbox.bytes[start..]);
            view.set_flags(view.flags() | self.flags);
            wire::seal_checksum(&mut outbox.bytes[start..]);
        }
        outbox.ends.push(outbox.bytes.len());
    }

    /// Queues the HELLO that announces the session. `source` is cut to fit.
    pub fn hello(
        &mut self,
        pid: u32,
        started_at_us: u64,
        source: &str,
        now_us: u64,
        outbox: &mut Outbox,
    ) {
        let room = self.max_datagram - HEADER_LEN - HELLO_FIXED_LEN - self.name.len();
        let mut cut = source.len().min(room);
        while !source.is_char_boundary(cut) {
            cut -= 1;
        }
        let name = self.name.clone();
        let payload = Payload::Hello {
            name: &name,
            pid,
            started_at_us,
            source: &source[..cut],
        };
        self.emit(self.next_seq, now_us, payload, outbox);
    }

    /// Numbers one line (`text` without its newline; `flags` are `LINE_*`) and adds it
    /// to the datagram being built, or cuts it into fragments when it does not fit one
    /// datagram. Returns the line's sequence number.
    pub fn push_line(&mut self, flags: u8, text: &[u8], now_us: u64, outbox: &mut Outbox) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if text.len() > self.max_whole_line() {
            self.push_fragments(seq, flags, text, now_us, outbox);
            return seq;
        }
        let record_len = LINE_RECORD_HEADER_LEN + text.len();
        let open_len = outbox.bytes.len() - outbox.finished_len();
        if self.open_lines > 0
            && (open_len + record_len > self.max_datagram || self.open_lines == u16::MAX)
        {
            let room = self.max_datagram - open_len;
            if self.pad_full && room >= LINE_RECORD_HEADER_LEN {
                let padding = room - LINE_RECORD_HEADER_LEN;
                outbox.bytes.push(wire::LINE_PADDING);
                outbox
                    .bytes
                    .extend_from_slice(&(padding as u16).to_be_bytes());
                outbox.bytes.resize(outbox.bytes.len() + padding, 0);
            }
            self.flush(outbox);
        }
        if self.open_lines == 0 {
            let header = self.header(seq, now_us);
            wire::write_header(&mut outbox.bytes, Kind::Data, self.flags, 0, &header);
        }
        wire::push_line_record(&mut outbox.bytes, flags, text);
        self.open_lines += 1;
        seq
    }

    fn push_fragments(
        &mut self,
        seq: u64,
        flags: u8,
        text: &[u8],
        now_us: u64,
        outbox: &mut Outbox,
    ) {
        let chunk = self.max_datagram - HEADER_LEN - FRAGMENT_HEADER_LEN;
        // Lines are bounded by the sender's --max-line (far below 4 GiB); a longer
        // slice is cut here so that the total always fits the u32 field.
        let total = u32::try_from(text.len()).unwrap_or(u32::MAX);
        let text = &text[..total as usize];
        for (i, bytes) in text.chunks(chunk).enumerate() {
            let offset = (i * chunk) as u32;
            let payload = Payload::Fragment {
                offset,
                total,
                line_flags: flags,
                bytes,
            };
            self.emit(seq, now_us, payload, outbox);
        }
    }

    /// Finishes the DATA datagram being built, if any, so that it can be sent.
    pub fn flush(&mut self, outbox: &mut Outbox) {
        if self.open_lines == 0 {
            return;
        }
        let start = outbox.finished_len();
        if self.sealed_next {
            wire::set_payload_len(&mut outbox.bytes[start..]);
        } else {
            wire::finish_datagram(&mut outbox.bytes[start..]);
        }
        outbox.ends.push(outbox.bytes.len());
        self.open_lines = 0;
    }

    /// Queues a HEARTBEAT carrying the number of lines sent so far.
    pub fn heartbeat(&mut self, now_us: u64, outbox: &mut Outbox) {
        let name = self.name.clone();
        self.emit(
            self.lines_sent(),
            now_us,
            Payload::Heartbeat { name: &name },
            outbox,
        );
    }

    /// Queues a COMPANION datagram: the kernel's netconsole of this sender sends
    /// from `source`.
    pub fn companion(&mut self, source: std::net::SocketAddr, now_us: u64, outbox: &mut Outbox) {
        self.emit(
            self.lines_sent(),
            now_us,
            Payload::Companion { source },
            outbox,
        );
    }

    /// Queues a GONE datagram: lines `first..=last` are no longer kept for resending.
    pub fn gone(&mut self, first: u64, last: u64, now_us: u64, outbox: &mut Outbox) {
        self.emit(first, now_us, Payload::Gone { last }, outbox);
    }

    /// Queues the END datagram (after flushing any open DATA).
    pub fn end(&mut self, reason: EndReason, now_us: u64, outbox: &mut Outbox) {
        let name = self.name.clone();
        self.emit(
            self.lines_sent(),
            now_us,
            Payload::End {
                name: &name,
                reason,
            },
            outbox,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Payload, LINE_PARTIAL};

    #[test]
    fn packs_until_full_then_starts_a_new_datagram() {
        let mut framer = Framer::new(1, "n", 128);
        let mut outbox = Outbox::default();
        // 128 - 40 header = 88 bytes of records: three 26-byte lines (29 with header) fit.
        for _ in 0..4 {
            framer.push_line(0, &[b'x'; 26], 5, &mut outbox);
        }
        framer.flush(&mut outbox);
        let sizes: Vec<usize> = outbox.datagrams().map(<[u8]>::len).collect();
        assert_eq!(sizes, vec![127, 69]);
        let second = Repr::parse(outbox.datagrams().nth(1).unwrap()).unwrap();
        assert_eq!(second.header.seq, 4);
        assert_eq!(second.header.counter, 1);
    }

    #[test]
    fn full_datagrams_are_padded_to_equal_size_and_decode_to_the_same_lines() {
        let mut framer = Framer::new(1, "n", 200);
        framer.set_pad_full(true);
        let mut outbox = Outbox::default();
        let lines: Vec<Vec<u8>> = (0..40u8)
            .map(|i| vec![b'a' + i % 26; 10 + usize::from(i) * 3])
            .collect();
        for line in &lines {
            framer.push_line(0, line, 5, &mut outbox);
        }
        framer.flush(&mut outbox);
        let sizes: Vec<usize> = outbox.datagrams().map(<[u8]>::len).collect();
        let (last, full) = sizes.split_last().unwrap();
        assert!(full.iter().all(|&s| s == 200 || s >= 198), "{sizes:?}");
        assert!(
            full.iter().filter(|&&s| s == 200).count() >= full.len() - 1,
            "{sizes:?}"
        );
        assert!(*last <= 200);
        let mut decoded = Vec::new();
        for d in outbox.datagrams() {
            let Payload::Lines { count, lines } = Repr::parse(d).unwrap().payload else {
                panic!()
            };
            let got: Vec<Vec<u8>> = lines.map(|l| l.text.to_vec()).collect();
            assert_eq!(got.len(), usize::from(count));
            decoded.extend(got);
        }
        assert_eq!(decoded, lines);
    }

    #[test]
    fn long_line_becomes_fragments_that_cover_it() {
        let mut framer = Framer::new(1, "n", 200);
        let mut outbox = Outbox::default();
        framer.push_line(0, b"before", 5, &mut outbox);
        let line: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let seq = framer.push_line(LINE_PARTIAL, &line, 5, &mut outbox);
        assert_eq!(seq, 2);
        framer.flush(&mut outbox);
        let mut rebuilt = vec![0u8; 1000];
        let mut covered = 0;
        for (i, d) in outbox.datagrams().enumerate() {
            assert!(d.len() <= 200);
            let repr = Repr::parse(d).unwrap();
            match repr.payload {
                Payload::Lines { count: 1, .. } => assert_eq!(i, 0, "'before' goes first"),
                Payload::Fragment {
                    offset,
                    total,
                    line_flags,
                    bytes,
                } => {
                    assert_eq!(
                        (repr.header.seq, total, line_flags),
                        (2, 1000, LINE_PARTIAL)
                    );
                    rebuilt[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
                    covered += bytes.len();
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((covered, rebuilt), (1000, line));
    }

    #[test]
    fn heartbeat_and_end_carry_lines_sent() {
        let mut framer = Framer::new(9, "host", 1400);
        let mut outbox = Outbox::default();
        framer.push_line(0, b"a", 1, &mut outbox);
        framer.push_line(0, b"b", 1, &mut outbox);
        framer.heartbeat(2, &mut outbox);
        framer.end(EndReason::Signal(15), 3, &mut outbox);
        let kinds: Vec<(Kind, u64)> = outbox
            .datagrams()
            .map(|d| {
                let r = Repr::parse(d).unwrap();
                (r.kind(), r.header.seq)
            })
            .collect();
        assert_eq!(
            kinds,
            vec![(Kind::Data, 1), (Kind::Heartbeat, 2), (Kind::End, 2)]
        );
        outbox.clear();
        assert!(outbox.is_empty());
    }

    #[test]
    fn max_datagram_is_clamped() {
        assert_eq!(Framer::new(1, "n", 1).max_datagram(), MIN_DATAGRAM);
        assert_eq!(Framer::new(1, "n", 1 << 20).max_datagram(), MAX_DATAGRAM);
        let long_name = "é".repeat(200);
        assert!(Framer::new(1, &long_name, 1400).name().len() <= MAX_NAME_LEN);
    }
}
