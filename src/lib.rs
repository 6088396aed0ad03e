//! conflux turns key-value data (etcd v3, files, environment variables) into local
//! config files: it renders templates, checks the result with the service's own
//! validator, swaps it in atomically and reloads the service. It is a drop-in for confd.
//!
//! # Layout
//!
//! ```text
//! backend (etcd | file | env) ──changes──► mirror (keys at one revision)
//!                                            │ snapshot
//! change / interval tick / SIGHUP ──► scheduler ──(resource, snapshot)──► pipeline
//!                                                   render → compare → stage → check → swap → reload
//!                                                        │
//!                                                        ▼
//!                                                     outcome ──► log · report · exit code
//! ```
//!
//! `ARCHITECTURE.md` at the top of the repository has the code map (what each module
//! owns and leaves to others) and the invariants.
//!
//! - Leaves: [`kv`] (snapshots, events, key paths, Go globs), [`values`] (durations,
//!   waits, modes), [`retry`] (the backoff policy), [`fswalk`] (the directory walker).
//! - Input: [`cli`], [`config`], [`resource`], [`confdir`], [`template`], [`store`].
//! - Data: [`backend`] (etcd, file, env) and [`mirror`].
//! - Work: [`scheduler`], [`pipeline`], [`command`], [`state`], [`outcome`].
//! - The loop: [`daemon`] (every mode, one-shot included) and [`run`] (wiring).
//! - Operations: [`telemetry`] (metrics, health, status), [`http`], [`systemd`].
//! - Beside the daemon: [`register`] (`conflux register`: a key held under a lease while
//!   the instance is healthy).

pub mod backend;
pub mod cli;
pub mod command;
pub mod confdir;
pub mod config;
pub mod daemon;
pub mod fswalk;
pub mod http;
pub mod kv;
pub mod lint;
pub mod mirror;
pub mod outcome;
pub mod pipeline;
pub mod register;
pub mod resource;
pub mod retry;
pub mod run;
pub mod scheduler;
pub mod state;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod template;
pub mod values;
