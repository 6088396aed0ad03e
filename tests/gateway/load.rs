//! A load client for the reload-under-load test: one thread sending requests through
//! nginx one after another, each on its own connection (a client of its own: no pool
//! or retry that could hide a failure), tallying what came back.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::live::poll;
use crate::nginx::try_get;

/// A client thread sending requests through nginx one after another, each on its own
/// connection, over a list of paths that the test extends as routes appear.
pub(super) struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<Tally>>,
}

/// What the load client saw.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) requests: usize,
    /// Connection errors, 5xx answers, and anything but 200 on the first path (whose
    /// route and live instance never go away).
    pub(super) failures: Vec<String>,
    /// 404s on routes added during the run: for up to ~100 ms after a reload, a worker
    /// of the previous config may still take a connection.
    pub(super) stale: usize,
}

impl Load {
    pub(super) fn start(addr: &str, first: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(Mutex::new(vec![first.to_string()]));
        let thread = {
            let (addr, stop, sent, paths) =
                (addr.to_string(), stop.clone(), sent.clone(), paths.clone());
            thread::spawn(move || load_loop(&addr, &stop, &sent, &paths))
        };
        Load {
            stop,
            sent,
            paths,
            thread: Some(thread),
        }
    }

    pub(super) fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    pub(super) fn add_path(&self, path: &str) {
        self.paths
            .lock()
            .expect("paths lock")
            .push(path.to_string());
    }

    /// Waits until `n` more requests have been answered (or have failed).
    pub(super) fn wait_requests(&self, n: usize) {
        let target = self.sent() + n;
        poll("load client progress", || self.sent() >= target);
    }

    pub(super) fn stop(mut self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().expect("load thread");
        thread.join().expect("load thread panicked")
    }
}

fn load_loop(
    addr: &str,
    stop: &AtomicBool,
    sent: &AtomicUsize,
    paths: &Mutex<Vec<String>>,
) -> Tally {
    let mut tally = Tally::default();
    while !stop.load(Ordering::SeqCst) {
        let (path, first) = {
            let paths = paths.lock().expect("paths lock");
            let i = tally.requests % paths.len();
            (paths[i].clone(), i == 0)
        };
        match try_get(addr, &path, None) {
            Ok((200, _)) => {}
            Ok((404, _)) if !first => tally.stale += 1,
            Ok((status, body)) => tally.failures.push(format!("{path}: {status} {body:?}")),
            Err(e) => tally.failures.push(format!("{path}: {e}")),
        }
        tally.requests += 1;
        sent.fetch_add(1, Ordering::SeqCst);
    }
    tally
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
