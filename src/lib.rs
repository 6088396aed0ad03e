//! conflux turns key-value data (etcd v3, files, environment variables) into local
//! config files: it renders Tera templates, checks the result with the service's own
//! validator, swaps it in atomically and reloads the service. It is a drop-in for confd.
//!
//! # Layout
//!
//! ```text
//! backend (etcd | file | env) ──changes──► mirror (keys at one revision)
//!                                            │ snapshot
//! interval tick / SIGHUP / change ──► scheduler ──(resource, store)──► pipeline ──► outcome
//!                                                  render → compare → stage → check → swap → reload
//! ```
//!
//! - [`cli`]: flags, with confd's single-dash spelling accepted.
//! - [`config`]: `conflux.toml` + `CONFLUX_*` environment + flags → one validated [`config::Config`].
//! - [`fswalk`]: the one directory walker (conf.d, data directories, templates): symlinks followed, loops skipped.
//! - [`resource`]: `conf.d/**/*.toml` → validated [`resource::Resource`]s.
//! - [`keys`]: key paths, selectors and the ranges a set of resources needs.
//! - [`mirror`]: the key space at one revision, and the per-resource [`store::Store`] views of it.
//! - [`store`]: the prefix-relative keys one template sees, with confd's lookups.
//! - [`backend`]: the [`backend::Backend`] trait and its `etcd`, `file` and `env` implementations.
//! - [`template`]: Tera set-up with autoescape off and the confd function set.
//! - [`command`]: check and reload commands: shell line, timeout, process group.
//! - [`pipeline`]: one resource, one pass.
//! - [`scheduler`]: when each resource is applied: coalescing, retries, one apply at a time.
//! - [`daemon`]: the watch and interval loops, SIGHUP reloads and shutdown.
//! - [`run`]: one-shot runs and the mapping of results to exit codes.

pub mod backend;
pub mod cli;
pub mod command;
pub mod confdir;
pub mod config;
pub mod daemon;
pub mod fswalk;
pub mod kv;
pub mod mirror;
pub mod outcome;
pub mod pipeline;
pub mod resource;
pub mod retry;
pub mod run;
pub mod scheduler;
pub mod state;
pub mod store;
pub mod template;
pub mod values;
