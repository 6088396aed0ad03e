//! The one integration-test binary (ripgrep's trick, `autotests = false`: it links
//! once), and this list says where each kind of test lives:
//!
//! - `harness`: temporary confdirs, runs of the real binary, golden files.
//! - `support`: harnesses for real components (an etcd started per test).
//! - `nginx`: a real nginx and small upstream HTTP servers, for the gateway.
//! - `onetime`: `--onetime` runs on temporary confdirs.
//! - `state`: the state directory, and one-shot runs through the scheduler.
//! - `etcd_backend`: the etcd backend against a real etcd, through the library API.
//! - `daemon`: the real binary as a daemon (`--watch`, interval) and `--onetime`
//!   against a real etcd: restarts, compaction, a cluster, auth, TLS, signals.
//! - `gateway`: the repository's own confdir (the nginx gateway) against a real nginx.
//! - `confd_dropin`: conflux in place of confd: Go templates against goldens written
//!   by real confd, confd's config file and flags, the binary started as `confd`.

// Test code: a failed unwrap is a failed test (the lint is for the product).
#![allow(clippy::unwrap_used)]

mod confd_dropin;
mod daemon;
mod etcd_backend;
mod gateway;
mod harness;
mod nginx;
mod onetime;
mod state;
mod support;
