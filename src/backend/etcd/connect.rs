//! Where etcd is and how to talk to it: [`EtcdOptions`] turned into etcd-client's
//! `ConnectOptions` (credentials, keep-alive, TLS material read from its files), with
//! settings that cannot work refused before anything is dialled.
//!
//! Connecting itself, and everything after, is the parent module's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use super::error::{EtcdError, fatal};
use crate::backend::{Action, BackendError};

/// Where etcd is and how to talk to it.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// `http://host:port`, `https://host:port` or a bare `host:port` (TLS when TLS files
    /// are given, plaintext otherwise).
    pub endpoints: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// CA bundle (PEM) that signed the server certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM), for `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Time to open a connection to one endpoint.
    pub connect_timeout: Duration,
    /// Time one unary request (a read, a revision check) may take.
    pub request_timeout: Duration,
    /// How often an open watch asks etcd for a progress notification.
    pub progress_interval: Duration,
    /// How long a watch may hear nothing at all before it is declared stalled.
    pub stall_timeout: Duration,
}

/// etcd's own default client URL: where conflux looks when no endpoint is given.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec![DEFAULT_ENDPOINT.to_string()],
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            progress_interval: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(25),
        }
    }
}

pub(super) fn has_tls_files(opts: &EtcdOptions) -> bool {
    opts.ca_file.is_some() || opts.cert_file.is_some() || opts.key_file.is_some()
}

/// Credentials, keep-alive and TLS. TLS files with an `http://` endpoint are refused
/// here, naming the endpoint: the operator asked for TLS, and etcd-client's own refusal
/// ("TLS options are only supported with HTTPS URLs") does not say which setting is off.
pub(super) fn connect_options(opts: &EtcdOptions) -> Result<ConnectOptions, BackendError> {
    if opts.endpoints.is_empty() {
        return Err(fatal(Action::Connect, EtcdError::NoEndpoints));
    }
    // new(), not default(): only new() keeps pinging an idle connection, which is how
    // a dead member is noticed between requests.
    let mut connect = ConnectOptions::new()
        .with_connect_timeout(opts.connect_timeout)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    match (&opts.username, &opts.password) {
        (Some(user), Some(password)) => {
            connect = connect
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        (None, None) => {}
        _ => return Err(fatal(Action::Connect, EtcdError::HalfCredentials)),
    }
    if has_tls_files(opts) {
        if let Some(plain) = opts.endpoints.iter().find(|e| e.starts_with("http://")) {
            let endpoint = plain.clone();
            return Err(fatal(
                Action::Connect,
                EtcdError::PlaintextEndpoint { endpoint },
            ));
        }
        connect = connect.with_tls(tls_options(opts)?);
    }
    Ok(connect)
}

/// The CA and client identity. The server name checked is each endpoint's own host
/// (tonic's default), so `https://127.0.0.1:2379` needs an IP SAN and `https://etcd-1:2379`
/// a DNS one; one fixed name would break clusters whose members have their own certs.
fn tls_options(opts: &EtcdOptions) -> Result<TlsOptions, BackendError> {
    let mut tls = TlsOptions::new();
    if let Some(ca) = &opts.ca_file {
        tls = tls.ca_certificate(Certificate::from_pem(read_pem(ca, Pem::Certificates)?));
    }
    match (&opts.cert_file, &opts.key_file) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(
                read_pem(cert, Pem::ClientCertificate)?,
                read_pem(key, Pem::ClientKey)?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(fatal(Action::Connect, EtcdError::HalfIdentity));
        }
    }
    Ok(tls)
}

/// What a TLS file must hold.
#[derive(Debug, Clone, Copy)]
enum Pem {
    Certificates,
    ClientCertificate,
    ClientKey,
}

impl Pem {
    fn what(self) -> &'static str {
        match self {
            Pem::Certificates => "CA",
            Pem::ClientCertificate => "client certificate",
            Pem::ClientKey => "client key",
        }
    }
}

/// Reads a TLS file and checks that it holds what it must, in PEM: a file that does
/// not is a configuration error now, not a handshake that fails at every connection
/// later (and that retrying would never fix).
fn read_pem(path: &Path, kind: Pem) -> Result<Vec<u8>, BackendError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let what = kind.what();
    let fail = |cause| fatal(Action::Connect, cause);
    let bytes = std::fs::read(path).map_err(|source| {
        let path = path.to_path_buf();
        fail(EtcdError::TlsFile { what, path, source })
    })?;
    let valid = match kind {
        Pem::Certificates | Pem::ClientCertificate => {
            let mut certs = CertificateDer::pem_slice_iter(&bytes).peekable();
            certs.peek().is_some() && certs.all(|c| c.is_ok())
        }
        Pem::ClientKey => PrivateKeyDer::from_pem_slice(&bytes).is_ok(),
    };
    if !valid {
        let path = path.to_path_buf();
        return Err(fail(EtcdError::NotPem { what, path }));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_files_with_a_plaintext_endpoint_are_refused() {
        let opts = EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..EtcdOptions::default()
        };
        let err = connect_options(&opts).expect_err("plaintext with TLS files");
        assert!(!err.is_transient());
        assert!(
            err.to_string()
                .contains("endpoint http://127.0.0.1:2379 is plaintext"),
            "{err}"
        );
    }
    #[test]
    fn half_credentials_are_refused() {
        let opts = EtcdOptions {
            username: Some("root".into()),
            ..EtcdOptions::default()
        };
        assert!(connect_options(&opts).is_err());
    }
}
