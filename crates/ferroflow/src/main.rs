//! The `ferroflow` command-line program.
fn main() {}
