//! The shared harness is its own crate (`crates/test-support`): the real
//! binary, the real emulator on 127.0.0.1:0, temp dirs, and waiting on
//! conditions with deadlines.

pub use autorender_test_support::*;
