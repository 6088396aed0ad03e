//! The one integration-test binary (ripgrep's trick, `autotests = false`: it links
//! once), and this list says where each kind of test lives:
//!
//! - `hardening`: attacks and accidents (planted links, special files, a rewound etcd,
//!   leaked secrets, injection, leftovers), each reproduced with the real binary.
//! - `lint`: `conflux lint` on confdirs with every kind of error, and clean ones.
//! - `harness`: temporary confdirs, runs of the real binary, golden files.
//! - `support`: harnesses for real components (an etcd started per test).
//! - `nginx`: a real nginx and small upstream HTTP servers, for the gateway.
//! - `onetime`: `--onetime` runs on temporary confdirs.
//! - `state`: the state directory, and one-shot runs through the scheduler.
//! - `etcd_backend`: the etcd backend against a real etcd, through the library API.
//! - `daemon`: the real binary as a daemon (`--watch`, interval) and `--onetime`
//!   against a real etcd: restarts, compaction, a cluster, auth, TLS, signals.
//! - `register`: `conflux register` against a real etcd: leases, health checks,
//!   signals, etcd restarts, keys deleted or held by others.
//! - `gateway`: the repository's own confdir (the nginx gateway) against a real nginx;
//!   with `conflux register` holding the instances' keys in `gateway::register`, and
//!   the container entrypoint in front of nginx in `gateway::container`.
//! - `operations`: metrics, health, readiness and status over HTTP, hot reload of the
//!   confdir, JSON logs, systemd notifications, `--detailed-exitcode`.
//! - `units`: resources as units (several files, fan-out, in-place check, rollback,
//!   `min_keys`, kill -9 during applies) with a real etcd and a real nginx.
//! - `confd_dropin`: conflux in place of confd: Go templates against goldens written
//!   by real confd, confd's config file and flags, the binary started as `confd`.
//! - `packaging`: `--version`, and the container entrypoint run directly with the file
//!   backend (the Debian package itself is checked by scripts/test-package).

// Test code: a failed unwrap is a failed test (the lint is for the product).
#![allow(clippy::unwrap_used)]

mod confd_dropin;
mod daemon;
mod etcd_backend;
mod gateway;
mod hardening;
mod harness;
mod lint;
mod nginx;
mod onetime;
mod operations;
mod packaging;
mod register;
mod state;
mod support;
mod units;
