//! The one integration-test binary (`autotests = false`): it links once, and this list
//! says where each kind of test lives.
//!
//! - `support`: harnesses for real components (an etcd started per test).
//! - `etcd_backend`: the etcd backend against a real etcd, through the library API.

mod etcd_backend;
mod support;
