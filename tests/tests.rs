//! The one integration-test binary (ripgrep's trick: it links once). Each module is a
//! kind of test:
//!
//! - `harness`: temporary confdirs, runs of the real binary, golden files.
//! - `onetime`: `--onetime` runs on temporary confdirs.

mod harness;
mod onetime;
