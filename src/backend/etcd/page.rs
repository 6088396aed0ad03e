//! Reading a large range in pages: the request for the next page and turning one
//! page of etcd's answer into pairs, dropping the decoded answer as it goes.
//!
//! Which ranges to read and at which revision is the caller's (`etcd::read`).

use etcd_client::{GetOptions, GetResponse};

/// Keys per page: about 2 MB of decoded answer at 100 bytes a pair, a few
/// milliseconds of etcd's time, and 10 requests for 100,000 keys.
pub(super) const PAGE: i64 = 10_000;

/// What is left to read: `[start, end)`.
pub(super) struct Range {
    pub(super) start: Vec<u8>,
    pub(super) end: Vec<u8>,
}

impl Range {
    /// The read of the next page, at `revision` when given.
    pub(super) fn request(&self, revision: Option<i64>) -> (Vec<u8>, GetOptions) {
        let mut options = GetOptions::new()
            .with_range(self.end.clone())
            .with_limit(PAGE);
        if let Some(revision) = revision {
            options = options.with_revision(revision);
        }
        (self.start.clone(), options)
    }
}

/// Moves the pairs of `resp` that `keep` accepts into `pairs` (keys and values taken,
/// not copied; invalid UTF-8 replaced, and `lossy` told the key and which of key or
/// value it was). Returns where the next page starts (just after the last key) when
/// etcd has more.
pub(super) fn take(
    resp: &mut GetResponse,
    keep: impl Fn(&str) -> bool,
    pairs: &mut Vec<(String, String)>,
    lossy: &mut dyn FnMut(&str, &'static str),
) -> Option<Vec<u8>> {
    let more = resp.more();
    let kvs = resp.take_kvs();
    let next = kvs.last().filter(|_| more).map(|kv| {
        let mut after = kv.key().to_vec();
        after.push(0);
        after
    });
    for kv in kvs {
        let (key, value) = kv.into_key_value();
        let (key, bad_key) = text(key);
        if keep(&key) {
            let (value, bad_value) = text(value);
            if bad_key || bad_value {
                lossy(&key, if bad_key { "key" } else { "value" });
            }
            pairs.push((key, value));
        }
    }
    next
}

/// The bytes as text, and whether they had to be repaired.
fn text(bytes: Vec<u8>) -> (String, bool) {
    match String::from_utf8(bytes) {
        Ok(text) => (text, false),
        Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), true),
    }
}
