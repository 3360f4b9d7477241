//! Helpers shared by the end-to-end tests: finding the binaries, spawning them,
//! reading their JSON output.
