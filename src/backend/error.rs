//! Why a backend call failed, in the one shape every caller reads: which backend, what
//! it was doing, whether trying again can help, and the underlying error, kept whole.
//!
//! Sorting a backend's own errors into transient and fatal is each backend's business
//! (`etcd/error.rs` for etcd); what the caller does about them (back off, give up, pick
//! an exit code) is the daemon's and `run`'s.

use std::error::Error;
use std::fmt;

/// The underlying error: etcd-client's, an I/O error, a data file's parse error, or a
/// condition a backend noticed itself. Boxed rather than one enum over every backend's
/// errors, so that this module does not depend on each of them; code that needs the
/// concrete type downcasts it.
pub type Cause = Box<dyn Error + Send + Sync + 'static>;

/// Why a backend call failed. The daemon retries [`BackendError::Transient`] with
/// backoff and gives up on [`BackendError::Fatal`].
///
/// The display is the whole story on one line (`etcdv3: snapshot: <cause>`), because
/// every consumer logs it with `%err`; [`Error::source`] hands out the cause itself for
/// code that wants its type. A printer that walks the chain as well therefore repeats
/// the cause: that was preferred to a display that loses the detail the operator needs
/// (a refused certificate, "Connection refused", a file's line).
#[derive(Debug)]
pub enum BackendError {
    /// Worth retrying: the server is away, a request timed out, a leader changed.
    Transient {
        backend: &'static str,
        /// Named for the text it used to be, so that code building an error from text
        /// (`message: "away".into()`, as test fakes do) still reads and compiles.
        message: Failure,
    },
    /// Retrying will not help: bad credentials, a malformed data file, a bad setting.
    Fatal {
        backend: &'static str,
        message: Failure,
    },
}

/// What a backend was doing when it failed, and the error that stopped it.
#[derive(Debug)]
pub struct Failure {
    /// `None` only for failures built from bare text (test fakes).
    pub action: Option<Action>,
    pub cause: Cause,
}

/// The step of a backend that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Opening the connection or checking the settings it needs.
    Connect,
    /// Reading every selected key at one revision.
    Snapshot,
    /// Following changes after a revision.
    Watch,
    /// Asking for the store's current revision.
    Revision,
    /// Asking a member for its status (the revision a user who may not read `/` gets).
    Status,
    /// Getting a new auth token.
    RefreshToken,
    /// `conflux register`: reading its key.
    Get,
    /// `conflux register`: putting its key.
    Put,
    /// `conflux register`: granting a lease.
    LeaseGrant,
    /// `conflux register`: revoking its lease.
    LeaseRevoke,
    /// `conflux register`: renewing its lease.
    LeaseKeepAlive,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Connect => "connect",
            Action::Snapshot => "snapshot",
            Action::Watch => "watch",
            Action::Revision => "revision",
            Action::Status => "status",
            Action::RefreshToken => "refresh token",
            Action::Get => "get",
            Action::Put => "put",
            Action::LeaseGrant => "lease grant",
            Action::LeaseRevoke => "lease revoke",
            Action::LeaseKeepAlive => "lease keep-alive",
        })
    }
}

impl BackendError {
    pub fn transient(backend: &'static str, action: Action, cause: impl Into<Cause>) -> Self {
        BackendError::Transient {
            backend,
            message: Failure::new(action, cause),
        }
    }

    pub fn fatal(backend: &'static str, action: Action, cause: impl Into<Cause>) -> Self {
        BackendError::Fatal {
            backend,
            message: Failure::new(action, cause),
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, BackendError::Transient { .. })
    }

    /// The backend's name (`etcdv3`, `file`, `env`).
    pub fn backend(&self) -> &'static str {
        match self {
            BackendError::Transient { backend, .. } | BackendError::Fatal { backend, .. } => {
                backend
            }
        }
    }

    pub fn failure(&self) -> &Failure {
        match self {
            BackendError::Transient { message, .. } | BackendError::Fatal { message, .. } => {
                message
            }
        }
    }

    pub fn action(&self) -> Option<Action> {
        self.failure().action
    }

    /// The underlying error, for `downcast_ref`.
    pub fn cause(&self) -> &(dyn Error + Send + Sync + 'static) {
        self.failure().cause.as_ref()
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.backend(), self.failure())
    }
}

impl Error for BackendError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self.failure().cause.as_ref())
    }
}

impl Failure {
    pub fn new(action: Action, cause: impl Into<Cause>) -> Self {
        Failure {
            action: Some(action),
            cause: cause.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.action {
            Some(action) => write!(f, "{action}: {}", self.cause),
            None => write!(f, "{}", self.cause),
        }
    }
}

impl From<&str> for Failure {
    fn from(text: &str) -> Self {
        Failure {
            action: None,
            cause: text.into(),
        }
    }
}

impl From<String> for Failure {
    fn from(text: String) -> Self {
        Failure {
            action: None,
            cause: text.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_backend_action_and_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "a.yaml: gone");
        let err = BackendError::fatal("file", Action::Snapshot, io);
        assert_eq!(err.to_string(), "file: snapshot: a.yaml: gone");
        assert!(!err.is_transient());
        assert_eq!(err.action(), Some(Action::Snapshot));
        let kind = err
            .cause()
            .downcast_ref::<std::io::Error>()
            .map(|e| e.kind());
        assert_eq!(kind, Some(std::io::ErrorKind::NotFound));
        assert!(err.source().is_some());
    }

    #[test]
    fn an_error_built_from_text_reads_as_the_text() {
        let err = BackendError::Transient {
            backend: "fake",
            message: "away".into(),
        };
        assert_eq!(err.to_string(), "fake: away");
        assert!(err.is_transient());
        assert_eq!(err.action(), None);
    }
}
