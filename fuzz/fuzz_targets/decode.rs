//! Coverage-guided fuzzing of the ncu and netconsole decoders (`cargo +nightly fuzz run
//! decode`). Invariant: no panic; whatever decodes re-encodes to the same bytes. Under
//! `cfg(fuzzing)` the CRC check is skipped so the fuzzer reaches the payload parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ncu_proto::{netconsole, wire};

fuzz_target!(|data: &[u8]| {
    if let Ok(repr) = wire::Repr::parse(data) {
        let mut again = Vec::new();
        repr.emit(&mut again);
        assert_eq!(again[..36], data[..36]);
        assert_eq!(again[40..], data[40..]);
    }
    let _ = netconsole::parse_extended(data);
    let _ = netconsole::classify(data);
});
