//! End-to-end tests: real ncu-send and ncu-recv processes on loopback.
mod faults;
mod fleet;
mod hostile;
mod integrations;
mod kernel_lab;
mod kmsg;
mod package;
mod receiver;
mod recovery;
mod sealed;
mod sender;
mod sender_recovery;
mod service;
