//! Architecture invariants, checked as a test.
