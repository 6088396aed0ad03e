//! The one integration-test binary (ripgrep's trick, `autotests = false`: it links
//! once), and this list says where each kind of test lives:
//!
//! - `harness`: temporary confdirs, runs of the real binary, golden files.
//! - `support`: harnesses for real components (an etcd started per test).
//! - `onetime`: `--onetime` runs on temporary confdirs.
//! - `etcd_backend`: the etcd backend against a real etcd, through the library API.

mod etcd_backend;
mod harness;
mod onetime;
mod support;
