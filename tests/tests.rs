//! The one integration-test binary (ripgrep's trick: it links once). Each module is a
//! kind of test:
//!
//! - `harness`: temporary confdirs, runs of the real binary, golden files.
//! - `onetime`: `--onetime` runs on temporary confdirs.
//! - `nginx`: a real nginx, upstream HTTP servers and a tiny client, for the gateway.
//! - `gateway`: the repository's own confdir (the nginx gateway) against a real nginx.

mod gateway;
mod harness;
mod nginx;
mod onetime;
