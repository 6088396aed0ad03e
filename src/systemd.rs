//! Telling systemd how the service is doing, when it asks (`NOTIFY_SOCKET` set, as for
//! `Type=notify`): `READY=1` after the first full pass, `STATUS=` lines, `RELOADING=1`
//! around a confdir reload, `STOPPING=1` at shutdown, and `WATCHDOG=1` from the loop
//! itself when `WatchdogSec=` is set, so that a stalled loop stops the pings (a timer
//! of its own would keep pinging for a dead loop).
//!
//! When to say what is the loop's decision; this only speaks the protocol, through the
//! `sd-notify` crate.

use std::time::Duration;

use sd_notify::NotifyState;

/// The notify socket, if systemd gave one.
#[derive(Debug, Clone)]
pub struct Systemd {
    enabled: bool,
    watchdog: Option<Duration>,
}

impl Systemd {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (the crate checks `WATCHDOG_PID`, so
    /// a child that inherits them does not ping for us).
    pub fn from_env() -> Systemd {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let watchdog = sd_notify::watchdog_enabled().filter(|d| enabled && !d.is_zero());
        Systemd { enabled, watchdog }
    }

    /// How often the loop must ping: half the watchdog timeout, as systemd advises.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn reloading(&self) {
        self.send(&[NotifyState::Reloading]);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::debug!(cause = %e, "cannot notify systemd");
        }
    }
}
