//! The one line splitter: cuts a byte stream into lines, complete lines straight out
//! of the buffer read, and at most one line being assembled (bounded by a maximum,
//! cut there and continued). The sender splits its input with it (`--max-line`);
//! the receiver joins plain netconsole and `nc -u` text with it
//! ([`crate::netconsole::PlainJoiner`]).

use crate::wire::{LINE_CONTINUATION, LINE_PARTIAL};

/// The line being assembled from one input stream.
#[derive(Debug)]
pub struct LineAssembler {
    /// Bytes read after the last newline, never more than `max_line`.
    pending: Vec<u8>,
    /// The next piece continues a line whose start was already sent (cut at
    /// `max_line`, or flushed as a partial line).
    continuing: bool,
    max_line: usize,
}

impl LineAssembler {
    /// An assembler that sends at most `max_line` bytes (at least 1) as one line.
    pub fn new(max_line: usize) -> LineAssembler {
        LineAssembler {
            pending: Vec::new(),
            continuing: false,
            max_line: max_line.max(1),
        }
    }

    /// How many bytes wait for a newline.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether bytes without a newline wait.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Feeds bytes just read; `emit(flags, text)` gets every piece ready to send, in
    /// order: each complete line (without its newline), and the first `max_line` bytes
    /// of a longer one (flagged partial; the rest follows flagged continuation).
    pub fn feed(&mut self, mut chunk: &[u8], mut emit: impl FnMut(u8, &[u8])) {
        while !chunk.is_empty() {
            let room = self.max_line - self.pending.len();
            let window = &chunk[..chunk.len().min(room + 1)];
            let cont = if self.continuing {
                LINE_CONTINUATION
            } else {
                0
            };
            if let Some(newline) = memchr::memchr(b'\n', window) {
                if self.pending.is_empty() {
                    emit(cont, &chunk[..newline]);
                } else {
                    self.pending.extend_from_slice(&chunk[..newline]);
                    emit(cont, &self.pending);
                    self.pending.clear();
                }
                self.continuing = false;
                chunk = &chunk[newline + 1..];
            } else if chunk.len() > room {
                // `max_line` bytes and the next one is not a newline: cut.
                if self.pending.is_empty() {
                    emit(LINE_PARTIAL | cont, &chunk[..room]);
                } else {
                    self.pending.extend_from_slice(&chunk[..room]);
                    emit(LINE_PARTIAL | cont, &self.pending);
                    self.pending.clear();
                }
                self.continuing = true;
                chunk = &chunk[room..];
            } else {
                self.pending.extend_from_slice(chunk);
                break;
            }
        }
    }

    /// Sends the bytes waiting without a newline as a partial line (idle for
    /// `--flush-after`, or at end of input). What comes next continues it.
    pub fn flush_partial(&mut self, mut emit: impl FnMut(u8, &[u8])) {
        if self.pending.is_empty() {
            return;
        }
        let cont = if self.continuing {
            LINE_CONTINUATION
        } else {
            0
        };
        emit(LINE_PARTIAL | cont, &self.pending);
        self.pending.clear();
        self.continuing = true;
        // A long partial line must not keep its memory after it left.
        if self.pending.capacity() > 64 * 1024 {
            self.pending.shrink_to(64 * 1024);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(max_line: usize, chunks: &[&[u8]], flush_at_end: bool) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut a = LineAssembler::new(max_line);
        for chunk in chunks {
            a.feed(chunk, |f, t| out.push((f, t.to_vec())));
        }
        if flush_at_end {
            a.flush_partial(|f, t| out.push((f, t.to_vec())));
        }
        out
    }

    #[test]
    fn whole_lines_across_chunks() {
        let out = feed_all(100, &[b"ab\ncd", b"e\n\nf"], true);
        assert_eq!(
            out,
            vec![
                (0, b"ab".to_vec()),
                (0, b"cde".to_vec()),
                (0, b"".to_vec()),
                (LINE_PARTIAL, b"f".to_vec()),
            ]
        );
    }

    #[test]
    fn a_line_of_exactly_max_line_is_whole() {
        assert_eq!(feed_all(3, &[b"abc\n"], false), vec![(0, b"abc".to_vec())]);
        assert_eq!(
            feed_all(3, &[b"ab", b"c", b"\n"], false),
            vec![(0, b"abc".to_vec())]
        );
    }

    #[test]
    fn longer_lines_are_cut_and_continued() {
        for chunks in [
            &[&b"abcdefgh\nxy\n"[..]][..],
            &[b"ab", b"cdefg", b"h\nxy\n"],
        ] {
            assert_eq!(
                feed_all(3, chunks, false),
                vec![
                    (LINE_PARTIAL, b"abc".to_vec()),
                    (LINE_PARTIAL | LINE_CONTINUATION, b"def".to_vec()),
                    (LINE_CONTINUATION, b"gh".to_vec()),
                    (0, b"xy".to_vec()),
                ],
                "{chunks:?}"
            );
        }
    }

    #[test]
    fn a_flushed_partial_line_is_continued() {
        let mut out = Vec::new();
        let mut a = LineAssembler::new(100);
        a.feed(b"abc", |f, t| out.push((f, t.to_vec())));
        assert!(a.has_pending());
        a.flush_partial(|f, t| out.push((f, t.to_vec())));
        assert!(!a.has_pending());
        a.feed(b"def\n", |f, t| out.push((f, t.to_vec())));
        assert_eq!(
            out,
            vec![
                (LINE_PARTIAL, b"abc".to_vec()),
                (LINE_CONTINUATION, b"def".to_vec())
            ]
        );
    }

    /// Model check: for random chunkings, the pieces joined back (newline after every
    /// piece not flagged partial) give the input, and no piece is over `max_line`.
    #[test]
    fn pieces_rebuild_the_input() {
        let mut x: u32 = 0x1234_5678;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for round in 0..200 {
            let max_line = 1 + (next() % 12) as usize;
            let input: Vec<u8> = (0..(next() % 200))
                .map(|_| {
                    if next() % 5 == 0 {
                        b'\n'
                    } else {
                        b'a' + (next() % 26) as u8
                    }
                })
                .collect();
            let mut chunks = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let n = 1 + (next() as usize % rest.len());
                chunks.push(&rest[..n]);
                rest = &rest[n..];
            }
            let mut rebuilt = Vec::new();
            for (flags, text) in feed_all(max_line, &chunks, true) {
                assert!(text.len() <= max_line, "round {round}");
                rebuilt.extend_from_slice(&text);
                if flags & LINE_PARTIAL == 0 {
                    rebuilt.push(b'\n');
                }
            }
            assert_eq!(rebuilt, input, "round {round}");
        }
    }
}
