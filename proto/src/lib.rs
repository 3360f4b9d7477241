//! The ncu protocol: wire format v1 and both ends' protocol logic, as state
//! machines without IO.
//!
//! [`sender::Sender`] is the sending end (lines, framing, sealing, the resend ring,
//! NACK answers, heartbeats, rollover, END); [`reassembler::Reassembler`] the
//! receiving end. This crate contains no networking code, opens no file, asks the
//! OS for no randomness and does not read any clock: callers hand it bytes read or
//! received together with the time, and it hands back datagrams to send, deadlines
//! and events (key files and randomness are `ncu-host`'s). The binaries `ncu-send`
//! and `ncu-recv` are the IO loops around it.

pub mod assembler;
pub mod budget;
pub mod event;
pub mod framer;
pub mod kmsg;
pub mod lines;
pub mod netconsole;
pub mod ranges;
pub mod reassembler;
pub mod recovery;
pub mod seal;
pub mod sender;
pub mod units;
pub mod wire;
