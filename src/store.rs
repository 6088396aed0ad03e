//! The prefix-relative keys one template sees, and confd's lookups over them
//! (`getv`, `gets`, `getvs`, `exists`, `ls`, `lsdir`). Template functions in
//! [`crate::template`] are thin wrappers over these methods.
//!
//! Cutting a store out of a snapshot is [`crate::mirror::Snapshot::store`]'s job.

use std::collections::BTreeMap;

/// Keys relative to a resource's prefix (`/db/host`) to values, at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Store {
    revision: i64,
    kvs: BTreeMap<String, String>,
}

impl Store {
    pub fn new(revision: i64, kvs: BTreeMap<String, String>) -> Self {
        Store { revision, kvs }
    }

    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn len(&self) -> usize {
        self.kvs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kvs.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.kvs.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.kvs.iter()
    }
}
