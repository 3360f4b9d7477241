//! The ncu protocol: wire format v1 and the receiver's reassembly logic.
//!
//! This crate contains no networking code, opens no file, asks the OS for no
//! randomness and does not read any clock: callers hand it received bytes together
//! with the time they were received, and it hands back events (key files and
//! randomness are `ncu-host`'s). The binaries `ncu-send` and `ncu-recv` are thin loops around it.

pub mod assembler;
pub mod budget;
pub mod event;
pub mod framer;
pub mod lines;
pub mod netconsole;
pub mod ranges;
pub mod reassembler;
pub mod recovery;
pub mod seal;
pub mod sender;
pub mod units;
pub mod wire;
