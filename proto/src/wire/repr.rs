//! [`Repr`]: a datagram parsed into its header and payload, and written back.

use std::net::{IpAddr, SocketAddr};

use super::build::push_name;
use super::*;

/// A parsed datagram: header plus payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr<'a> {
    /// Header fields.
    pub header: Header,
    /// The kind-specific part.
    pub payload: Payload<'a>,
}

impl<'a> Repr<'a> {
    /// Parses received bytes: checks the header and CRC, then the payload. Fails with
    /// [`DecodeError::Sealed`] when the payload is sealed (open it first).
    pub fn parse(bytes: &'a [u8]) -> Result<Repr<'a>, DecodeError> {
        let datagram = Datagram::new_checked(bytes)?;
        if datagram.flags() & FLAG_SEALED != 0 {
            return Err(DecodeError::Sealed);
        }
        let header = Header {
            session: datagram.session(),
            seq: datagram.seq(),
            sent_at_us: datagram.sent_at_us(),
            counter: datagram.counter(),
        };
        let kind = datagram.kind().ok_or(DecodeError::UnknownKind)?;
        let fragment = datagram.flags() & FLAG_FRAGMENT != 0;
        let payload = parse_payload(kind, fragment, &bytes[HEADER_LEN..])?;
        Ok(Repr { header, payload })
    }

    /// The kind of this datagram.
    pub fn kind(&self) -> Kind {
        match self.payload {
            Payload::Hello { .. } => Kind::Hello,
            Payload::Lines { .. } | Payload::Fragment { .. } => Kind::Data,
            Payload::Heartbeat { .. } => Kind::Heartbeat,
            Payload::End { .. } => Kind::End,
            Payload::Nack { .. } => Kind::Nack,
            Payload::Gone { .. } => Kind::Gone,
            Payload::Companion { .. } => Kind::Companion,
        }
    }

    /// The length of the payload [`Repr::emit`] writes.
    pub fn payload_len(&self) -> usize {
        match &self.payload {
            Payload::Hello { name, source, .. } => 4 + 8 + 1 + name.len() + 2 + source.len(),
            Payload::Lines { lines, .. } => lines.rest.len(),
            Payload::Fragment { bytes, .. } => FRAGMENT_HEADER_LEN + bytes.len(),
            Payload::Heartbeat { name } => 1 + name.len(),
            Payload::End { name, .. } => 1 + name.len() + 1 + 4,
            Payload::Nack { ranges } => 1 + ranges.bytes().len(),
            Payload::Gone { .. } => 8,
            Payload::Companion { source } => match source {
                SocketAddr::V4(_) => 1 + 4 + 2,
                SocketAddr::V6(_) => 1 + 16 + 2,
            },
        }
    }

    /// Appends this datagram's bytes to `out` (CRC included).
    ///
    /// # Panics
    /// When the payload is longer than 65535 bytes or a name is longer than
    /// [`MAX_NAME_LEN`]: callers build payloads within those limits.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let payload_len =
            u16::try_from(self.payload_len()).expect("caller keeps payloads within a datagram");
        let flags = match self.payload {
            Payload::Fragment { .. } => FLAG_FRAGMENT,
            _ => 0,
        };
        write_header(out, self.kind(), flags, payload_len, &self.header);
        match &self.payload {
            Payload::Hello {
                name,
                pid,
                started_at_us,
                source,
            } => {
                out.extend_from_slice(&pid.to_be_bytes());
                out.extend_from_slice(&started_at_us.to_be_bytes());
                push_name(out, name);
                let source_len = u16::try_from(source.len()).expect("source fits the payload");
                out.extend_from_slice(&source_len.to_be_bytes());
                out.extend_from_slice(source.as_bytes());
            }
            Payload::Lines { lines, .. } => out.extend_from_slice(lines.rest),
            Payload::Fragment {
                offset,
                total,
                line_flags,
                bytes,
            } => {
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(&total.to_be_bytes());
                out.push(*line_flags);
                out.extend_from_slice(bytes);
            }
            Payload::Heartbeat { name } => push_name(out, name),
            Payload::End { name, reason } => {
                push_name(out, name);
                let (code, value) = reason.code();
                out.push(code);
                out.extend_from_slice(&value.to_be_bytes());
            }
            Payload::Nack { ranges } => {
                out.push((ranges.bytes().len() / NACK_RANGE_LEN) as u8);
                out.extend_from_slice(ranges.bytes());
            }
            Payload::Gone { last } => out.extend_from_slice(&last.to_be_bytes()),
            Payload::Companion { source } => {
                match source.ip() {
                    IpAddr::V4(ip) => {
                        out.push(4);
                        out.extend_from_slice(&ip.octets());
                    }
                    IpAddr::V6(ip) => {
                        out.push(6);
                        out.extend_from_slice(&ip.octets());
                    }
                }
                out.extend_from_slice(&source.port().to_be_bytes());
            }
        }
        seal_checksum(&mut out[start..]);
    }
}

fn parse_payload(kind: Kind, fragment: bool, p: &[u8]) -> Result<Payload<'_>, DecodeError> {
    let mut r = Reader { rest: p };
    let payload = match kind {
        Kind::Hello => {
            let pid = r.u32()?;
            let started_at_us = r.u64()?;
            let name_len = usize::from(r.u8()?);
            let name = r.text(name_len)?;
            let source_len = usize::from(r.u16()?);
            let source = r.text(source_len)?;
            Payload::Hello {
                name,
                pid,
                started_at_us,
                source,
            }
        }
        Kind::Data if fragment => {
            let offset = r.u32()?;
            let total = r.u32()?;
            let line_flags = r.u8()?;
            if line_flags & !KNOWN_LINE_FLAGS != 0 {
                return Err(DecodeError::BadFlags);
            }
            let bytes = r.take(r.rest.len())?;
            let end = u64::from(offset) + bytes.len() as u64;
            if bytes.is_empty() || end > u64::from(total) {
                return Err(DecodeError::FragmentOutOfRange);
            }
            Payload::Fragment {
                offset,
                total,
                line_flags,
                bytes,
            }
        }
        Kind::Data => {
            let mut count: u16 = 0;
            let mut rest = p;
            while !rest.is_empty() {
                if rest.len() < LINE_RECORD_HEADER_LEN {
                    return Err(DecodeError::BadLength);
                }
                let padding = rest[0] == LINE_PADDING;
                if rest[0] & !KNOWN_LINE_FLAGS != 0 && !padding {
                    return Err(DecodeError::BadFlags);
                }
                let len = usize::from(read_u16(&rest[1..3]));
                if rest.len() < LINE_RECORD_HEADER_LEN + len {
                    return Err(DecodeError::BadLength);
                }
                let bytes = &rest[LINE_RECORD_HEADER_LEN..LINE_RECORD_HEADER_LEN + len];
                rest = &rest[LINE_RECORD_HEADER_LEN + len..];
                if padding {
                    // Last record, zero bytes: one canonical form.
                    if !rest.is_empty() || bytes.iter().any(|&b| b != 0) {
                        return Err(DecodeError::BadLength);
                    }
                    break;
                }
                count = count.checked_add(1).ok_or(DecodeError::BadLength)?;
            }
            if count == 0 {
                return Err(DecodeError::EmptyData);
            }
            return Ok(Payload::Lines {
                count,
                lines: Lines { rest: p },
            });
        }
        Kind::Heartbeat => {
            let name_len = usize::from(r.u8()?);
            Payload::Heartbeat {
                name: r.text(name_len)?,
            }
        }
        Kind::End => {
            let name_len = usize::from(r.u8()?);
            let name = r.text(name_len)?;
            let code = r.u8()?;
            let value = r.u32()? as i32;
            let reason = EndReason::from_code(code, value).ok_or(DecodeError::BadEndReason)?;
            Payload::End { name, reason }
        }
        Kind::Nack => {
            let n = usize::from(r.u8()?);
            if n == 0 || n > MAX_NACK_RANGES {
                return Err(DecodeError::BadLength);
            }
            let bytes = r.take(n * NACK_RANGE_LEN)?;
            for (first, count) in (NackRanges { rest: bytes }) {
                if first == 0 || count == 0 || first.checked_add(u64::from(count)).is_none() {
                    return Err(DecodeError::BadLength);
                }
            }
            Payload::Nack {
                ranges: NackRanges { rest: bytes },
            }
        }
        Kind::Gone => Payload::Gone { last: r.u64()? },
        Kind::Companion => {
            let ip = match r.u8()? {
                4 => {
                    let b: [u8; 4] = r.take(4)?.try_into().map_err(|_| DecodeError::BadLength)?;
                    IpAddr::from(b)
                }
                6 => {
                    let b: [u8; 16] = r.take(16)?.try_into().map_err(|_| DecodeError::BadLength)?;
                    IpAddr::from(b)
                }
                _ => return Err(DecodeError::BadLength),
            };
            Payload::Companion {
                source: SocketAddr::new(ip, r.u16()?),
            }
        }
    };
    if !r.rest.is_empty() {
        return Err(DecodeError::BadLength);
    }
    Ok(payload)
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::BadLength);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(read_u16(self.take(2)?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(read_u32(self.take(4)?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(read_u64(self.take(8)?))
    }
    fn text(&mut self, n: usize) -> Result<&'a str, DecodeError> {
        core::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::BadText)
    }
}
