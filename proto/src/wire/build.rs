//! Building datagrams in place: the header, line records, NACK ranges, the CRC.

use super::{
    compute_checksum, field, Datagram, Header, Kind, HEADER_LEN, MAGIC, MAX_NACK_RANGES, VERSION,
};

/// Appends a NACK payload for `ranges` (at most [`MAX_NACK_RANGES`] are taken) and
/// returns how many ranges it holds.
pub fn push_nack_ranges(out: &mut Vec<u8>, ranges: &[(u64, u32)]) -> usize {
    let ranges = &ranges[..ranges.len().min(MAX_NACK_RANGES)];
    out.push(ranges.len() as u8);
    for (first, count) in ranges {
        out.extend_from_slice(&first.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
    }
    ranges.len()
}

pub(super) fn push_name(out: &mut Vec<u8>, name: &str) {
    let len = u8::try_from(name.len()).expect("names are at most MAX_NAME_LEN bytes");
    out.push(len);
    out.extend_from_slice(name.as_bytes());
}

/// Writes a header with a zero CRC; [`seal_checksum`] fills it in once the payload
/// follows.
pub fn write_header(out: &mut Vec<u8>, kind: Kind, flags: u8, payload_len: u16, header: &Header) {
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind as u8);
    out.push(flags);
    out.extend_from_slice(&payload_len.to_be_bytes());
    out.extend_from_slice(&header.session.to_be_bytes());
    out.extend_from_slice(&header.seq.to_be_bytes());
    out.extend_from_slice(&header.sent_at_us.to_be_bytes());
    out.extend_from_slice(&header.counter.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
}

/// Fills in the CRC field of a complete datagram (header and payload).
///
/// # Panics
/// When `datagram` is shorter than [`HEADER_LEN`].
pub fn seal_checksum(datagram: &mut [u8]) {
    let crc = compute_checksum(datagram);
    datagram[field::CRC].copy_from_slice(&crc.to_be_bytes());
}

/// Rewrites the payload length field of a complete datagram after its payload was
/// appended, then its CRC. For builders that append lines one by one.
///
/// # Panics
/// When `datagram` is shorter than [`HEADER_LEN`] or longer than 65535 + header.
pub fn finish_datagram(datagram: &mut [u8]) {
    set_payload_len(datagram);
    seal_checksum(datagram);
}

/// Rewrites the payload length field of a complete datagram, leaving its CRC as it
/// is: for datagrams sealed next (sealing writes the CRC).
///
/// # Panics
/// As [`finish_datagram`].
pub fn set_payload_len(datagram: &mut [u8]) {
    let len = u16::try_from(datagram.len() - HEADER_LEN).expect("payload within a datagram");
    Datagram::new_unchecked(datagram).set_payload_len(len);
}

/// Appends one line record (flags, length, bytes) to a DATA payload being built.
///
/// # Panics
/// When `text` is longer than 65535 bytes.
pub fn push_line_record(out: &mut Vec<u8>, flags: u8, text: &[u8]) {
    let len = u16::try_from(text.len()).expect("a whole line record fits in u16");
    out.push(flags);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text);
}
