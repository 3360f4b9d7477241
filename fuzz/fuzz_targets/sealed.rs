//! Coverage-guided fuzzing of the sealed path (`cargo +nightly fuzz run sealed`).
//! Two ways in: the input as a sealed datagram off the wire (it must not open: the
//! fuzzer cannot forge a tag), and the input as a plain datagram that a key holder
//! sealed, opened, parsed and checked against the replay guard as the receiver does
//! (whatever a sender with the key puts inside must not panic the receiver). Invariant:
//! no panic; opening gives back the bytes that were sealed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ncu_proto::seal::{open, seal, Keys, ReplayConfig, ReplayGuard, SEAL_OVERHEAD};
use ncu_proto::wire::{self, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let keys = Keys::from_bytes([7; 32], &[[9; 32]]);
    let mut out = Vec::new();
    // Off the wire: unless it is one of ours byte for byte, it does not open.
    assert!(open(&keys, data, &mut out).is_err());

    // From a key holder: any plain datagram that seal() accepts (a full header, and
    // room for the tag in the 16-bit length field).
    if data.len() < HEADER_LEN || data.len() - HEADER_LEN + SEAL_OVERHEAD > usize::from(u16::MAX) {
        return;
    }
    // Magic, version and length right, so that the fuzzer spends its time on what
    // follows (kind, flags, payload) rather than on finding them.
    let mut plain = data.to_vec();
    plain[..3].copy_from_slice(&wire::MAGIC);
    plain[3] = wire::VERSION;
    wire::set_payload_len(&mut plain);
    let mut sealed = Vec::new();
    seal(&keys, &plain, &mut sealed);
    let mut opened = Vec::new();
    if open(&keys, &sealed, &mut opened).is_ok() {
        assert_eq!(opened[HEADER_LEN..], plain[HEADER_LEN..]);
        if let Ok(repr) = wire::Repr::parse(&opened) {
            let mut guard = ReplayGuard::new(ReplayConfig::default());
            let _ = guard.check(&repr.header, repr.header.sent_at_us);
            let _ = guard.check(&repr.header, repr.header.sent_at_us);
        }
    }
});
