//! End-to-end tests of the `ferroflow` program.
