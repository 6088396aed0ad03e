//! What goes wrong talking to etcd, as data: [`EtcdError`] is etcd-client's error (its
//! source chain opened) or a condition this backend noticed itself, and [`classify`]
//! sorts etcd-client's errors into what the daemon does next: retry
//! ([`BackendError::Transient`]) or stop and tell the operator ([`BackendError::Fatal`]).
//!
//! The sorting reads types, never the text: the gRPC status code, etcd-client's
//! variant, and for a failed connection a `rustls::Error` found in the source chain.
//! Text is read only where etcd hands over nothing else, a watch response's
//! `cancel_reason` (see `watch.rs`). When to retry and how long to wait is the caller's.

use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tonic::Code;

use super::NAME;
use crate::backend::{Action, BackendError};

/// Why an etcd call failed. The display is what the operator reads after
/// `etcdv3: <action>: `.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// etcd-client's own error: a gRPC status, a transport or a settings error.
    #[error(transparent)]
    Client(ClientError),
    #[error("no answer from {endpoints:?} within {after:?}")]
    ConnectTimedOut {
        endpoints: Vec<String>,
        after: Duration,
    },
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    #[error("no endpoints configured")]
    NoEndpoints,
    #[error("username and password must be given together")]
    HalfCredentials,
    #[error("client certificate and key must be given together")]
    HalfIdentity,
    /// TLS files with an `http://` endpoint: refused here, naming the endpoint, because
    /// etcd-client's own refusal ("TLS options are only supported with HTTPS URLs")
    /// does not say which setting is off.
    #[error("TLS files given but endpoint {endpoint} is plaintext")]
    PlaintextEndpoint { endpoint: String },
    #[error("reading {what} {}: {source}", path.display())]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {} holds no PEM {what} (a certificate's BEGIN CERTIFICATE block, or a key's BEGIN PRIVATE KEY block)", path.display())]
    NotPem { what: &'static str, path: PathBuf },
    #[error("response without a header")]
    NoHeader,
    #[error("unexpected txn response at revision {revision}")]
    UnexpectedTxnResponse { revision: i64 },
    /// Nothing at all arrived, not even a progress notification (a frozen member, a
    /// lost route).
    #[error("stalled: nothing heard for {silent:?} (from revision {from})")]
    Stalled { silent: Duration, from: i64 },
    #[error("stream ended (from revision {from})")]
    StreamEnded { from: i64 },
    #[error("refused: invalid auth token after refreshing it")]
    TokenStillInvalid,
    /// etcd canceled the watch; `reason` is its text, all etcd gives.
    #[error("watch of {range} canceled: {reason}")]
    Canceled { range: String, reason: String },
}

/// etcd-client's error with its source chain opened. `etcd_client::Error` reports no
/// source, so the status or transport error it wraps, and what tonic keeps under that
/// (the refused certificate, "Connection refused"), would be out of reach of
/// `source()` and `downcast_ref` if it were kept as it is.
#[derive(Debug)]
pub struct ClientError(pub etcd_client::Error);

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl StdError for ClientError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        use etcd_client::Error as E;
        match &self.0 {
            E::GRpcStatus(status) => Some(status),
            E::TransportError(err) => Some(err),
            E::IoError(err) => Some(err),
            E::InvalidUri(err) => Some(err),
            E::InvalidMetadataValue(err) => Some(err),
            E::Utf8Error(err) => Some(err),
            _ => None,
        }
    }
}

/// etcd answers `Unauthenticated` only for an expired or unknown token
/// (`rpctypes.ErrGRPCInvalidAuthToken`), which getting a new token cures; a wrong
/// password is `InvalidArgument` (`ErrGRPCAuthFailed`).
pub(super) fn is_invalid_token(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(s) if s.code() == Code::Unauthenticated)
}

/// etcd's "requested lease not found" (a revoke, keep-alive or put naming a lease that
/// expired or was revoked), or any other NotFound status: for callers that expect it
/// and turn it into a value before [`classify`] sees it.
pub fn is_not_found(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(s) => s.code() == Code::NotFound,
        // etcd-client's own keep-alive opening reports a lease with no TTL left so.
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("not found"),
        _ => false,
    }
}

/// The gRPC status code of an etcd call that failed with one.
pub(super) fn status_code(error: &BackendError) -> Option<Code> {
    match error.cause().downcast_ref::<EtcdError>()? {
        EtcdError::Client(ClientError(etcd_client::Error::GRpcStatus(status))) => {
            Some(status.code())
        }
        _ => None,
    }
}

/// etcd-client's `error`, met while doing `action`, as transient or fatal.
pub fn classify(error: etcd_client::Error, action: Action) -> BackendError {
    let fatal = is_fatal(&error);
    let cause = EtcdError::Client(ClientError(error));
    if fatal {
        BackendError::fatal(NAME, action, cause)
    } else {
        BackendError::transient(NAME, action, cause)
    }
}

pub(super) fn transient(action: Action, cause: EtcdError) -> BackendError {
    BackendError::transient(NAME, action, cause)
}

pub(super) fn fatal(action: Action, cause: EtcdError) -> BackendError {
    BackendError::fatal(NAME, action, cause)
}

/// Fatal when retrying will not help: bad credentials, missing permissions, a
/// certificate one side refuses, settings etcd-client rejects. Everything else (the
/// server away, a timeout, a broken connection, a compacted revision, an expired
/// token) is transient. I/O errors are transient whatever their kind: refused, reset,
/// unreachable and timed out all mean a server that may come back.
fn is_fatal(error: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match error {
        E::GRpcStatus(status) => fatal_code(status.code()) || refused_certificate(status),
        // Refused while building the client, before any request: an endpoint that is
        // not a URI, TLS material tonic cannot load (etcd-client 0.21 returns a
        // TransportError only there), a token that cannot be a header.
        E::InvalidArgs(_)
        | E::InvalidUri(_)
        | E::InvalidMetadataValue(_)
        | E::EndpointError(_)
        | E::TransportError(_) => true,
        E::IoError(err) => refused_certificate(err),
        _ => false,
    }
}

fn fatal_code(code: Code) -> bool {
    matches!(
        code,
        Code::PermissionDenied | Code::InvalidArgument | Code::Unimplemented
    )
}

/// A certificate one side refuses and will keep refusing: the server's, not trusted
/// here (unknown issuer, wrong name, expired), or ours, missing or refused there.
///
/// rustls says so with a `rustls::Error` deep in the source chain, inside an
/// `io::Error` from tokio-rustls. rustls is a direct dependency only to name that
/// type, and it is the one rustls tonic uses (Cargo.lock has a single 0.23). Should a
/// future etcd-client move to another rustls, the downcast finds nothing and refused
/// certificates fall back to transient: retried with backoff, the refusal in every
/// log line, never silently. The integration test `tls_with_client_certificates`
/// (an untrusted server certificate must be fatal) fails first.
fn refused_certificate(error: &(dyn StdError + 'static)) -> bool {
    chain(error).any(|err| err.downcast_ref::<rustls::Error>().is_some_and(is_refusal))
}

fn is_refusal(error: &rustls::Error) -> bool {
    use rustls::AlertDescription as Alert;
    match error {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::InvalidCertRevocationList(_) => true,
        rustls::Error::AlertReceived(alert) => matches!(
            alert,
            Alert::BadCertificate
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::CertificateExpired
                | Alert::CertificateUnknown
                | Alert::UnknownCA
                | Alert::AccessDenied
                | Alert::NoCertificate
                | Alert::CertificateRequired
        ),
        _ => false,
    }
}

/// `error` and its sources. An `io::Error` is looked into with `get_ref`: its own
/// `source()` skips the error it wraps and returns that error's source.
fn chain<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&err| {
        match err.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
            None => err.source(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, message))
    }

    #[test]
    fn status_codes_split_into_fatal_and_transient() {
        let denied = status(Code::PermissionDenied, "etcdserver: permission denied");
        let bad_password = status(Code::InvalidArgument, "etcdserver: authentication failed");
        let expired = status(Code::Unauthenticated, "etcdserver: invalid auth token");
        let away = status(Code::Unavailable, "tcp connect error");
        assert!(!classify(denied, Action::Snapshot).is_transient());
        assert!(!classify(bad_password, Action::Connect).is_transient());
        assert!(is_invalid_token(&expired));
        assert!(classify(expired, Action::Snapshot).is_transient());
        let away = classify(away, Action::Watch);
        assert!(away.is_transient());
        assert_eq!(status_code(&away), Some(Code::Unavailable));
        assert!(away.to_string().starts_with("etcdv3: watch: "), "{away}");
    }

    /// Where tonic puts a handshake failure: a status whose source chain holds an
    /// `io::Error` wrapping the `rustls::Error`.
    #[test]
    fn a_refused_certificate_is_found_in_the_source_chain() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, refused);
        let status = tonic::Status::from_error(Box::new(Wrapper(io)));
        assert!(status.source().is_some());
        let error = classify(etcd_client::Error::GRpcStatus(status), Action::Snapshot);
        assert!(!error.is_transient(), "{error}");

        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let status = tonic::Status::from_error(Box::new(Wrapper(reset)));
        let error = classify(etcd_client::Error::GRpcStatus(status), Action::Snapshot);
        assert!(error.is_transient(), "{error}");
    }

    /// A transport error wrapping an I/O error, as hyper's are.
    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("transport error")
        }
    }

    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }
}
