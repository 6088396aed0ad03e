//! etcd-client errors sorted into what the daemon does next: retry
//! ([`BackendError::Transient`]) or stop and tell the operator ([`BackendError::Fatal`]).

use super::NAME;
use crate::backend::BackendError;

/// gRPC status codes that matter here (tonic::Code as numbers: tonic is not a direct
/// dependency, and these values are fixed by the gRPC spec).
mod code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const UNAUTHENTICATED: i32 = 16;
}

pub(super) fn is_invalid_token(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(s)
        if i32::from(s.code()) == code::UNAUTHENTICATED && s.message().contains("invalid auth token"))
}

/// etcd's "requested lease not found" (a revoke, keep-alive or put naming a lease that
/// expired or was revoked), or any other gRPC NotFound.
pub fn is_not_found(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(s) => i32::from(s.code()) == code::NOT_FOUND,
        // etcd-client's own keep-alive opening reports a lease with no TTL left this way.
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("not found"),
        _ => false,
    }
}

/// Transient (worth retrying: unavailable, timeouts, broken transport, a compacted
/// pinned revision, an expired token) or Fatal (retrying will not help: bad
/// credentials, missing permissions, bad TLS material, malformed settings).
pub fn classify(error: &etcd_client::Error, what: &str) -> BackendError {
    use etcd_client::Error as E;
    let text = error_chain(error);
    let message = format!("{what}: {text}");
    let fatal_kind = match error {
        E::GRpcStatus(status) => fatal_status(i32::from(status.code()), &text),
        E::InvalidArgs(_) | E::InvalidUri(_) | E::InvalidMetadataValue(_) | E::EndpointError(_) => {
            true
        }
        _ => false,
    };
    if fatal_kind || is_tls_failure(&text) {
        fatal(message)
    } else {
        transient(message)
    }
}

fn fatal_status(code: i32, text: &str) -> bool {
    match code {
        code::PERMISSION_DENIED | code::INVALID_ARGUMENT | code::UNIMPLEMENTED => true,
        code::UNAUTHENTICATED => !text.contains("invalid auth token"),
        _ => false,
    }
}

/// A certificate the other side will keep rejecting (untrusted issuer, wrong name,
/// missing or refused client certificate).
fn is_tls_failure(text: &str) -> bool {
    [
        "certificate",
        "Certificate",
        "UnknownIssuer",
        "NotValidForName",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// The error with its sources: tonic hides the useful part ("invalid peer
/// certificate", "Connection refused") in the source chain.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

pub(super) fn transient(message: String) -> BackendError {
    BackendError::Transient {
        backend: NAME,
        message,
    }
}

pub(super) fn fatal(message: String) -> BackendError {
    BackendError::Fatal {
        backend: NAME,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_split_into_fatal_and_transient() {
        assert!(fatal_status(
            code::PERMISSION_DENIED,
            "etcdserver: permission denied"
        ));
        assert!(fatal_status(
            code::INVALID_ARGUMENT,
            "authentication failed"
        ));
        assert!(!fatal_status(
            code::UNAUTHENTICATED,
            "etcdserver: invalid auth token"
        ));
        assert!(!fatal_status(14, "tcp connect error"));
        assert!(is_tls_failure("invalid peer certificate: UnknownIssuer"));
    }
}
