//! Real components the integration tests run against.

pub mod etcd;
