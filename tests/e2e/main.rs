//! End-to-end tests: real ncu-send and ncu-recv processes on loopback.
mod sender;
mod receiver;
