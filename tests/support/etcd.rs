//! A real etcd for tests: started from the `etcd` binary on free loopback ports with a
//! temporary data dir, ready once a real KV request succeeds, killed (SIGKILL) on drop.
//!
//! A missing `etcd` binary panics: these tests never skip (install `etcd-server`).
//! Variants: [`EtcdServer::start_tls`] (its own CA, server and client certificates,
//! `--client-cert-auth`), [`EtcdServer::enable_auth`] (root and a read-only user), and
//! [`EtcdCluster::start`] for a multi-member cluster whose members can be killed.

// Shared by several test modules; each uses only some helpers.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, Permission, TlsOptions};
use tempfile::TempDir;
use tokio::time::Instant;

/// The binary the harness runs.
const ETCD: &str = "etcd";

/// How long etcd gets to answer its first request (normally 0.2–1.5 s).
const READY_DEADLINE: Duration = Duration::from_secs(20);

pub const ROOT: (&str, &str) = ("root", "rootpw");
pub const READER: (&str, &str) = ("reader", "readerpw");

/// Client-side TLS material for a [`EtcdServer::start_tls`] server.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One etcd process: its command line, kept to restart it on the same data dir and ports.
struct Member {
    name: String,
    client_url: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn new(name: &str, dir: &Path, ports: Ports, cluster: &str, scheme: &str) -> Member {
        let client_url = format!("{scheme}://127.0.0.1:{}", ports.client);
        let peer_url = format!("http://127.0.0.1:{}", ports.peer);
        let args = vec![
            format!("--name={name}"),
            format!("--data-dir={}", dir.join(format!("{name}.data")).display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--listen-metrics-urls=http://127.0.0.1:{}", ports.metrics),
            format!("--initial-cluster={cluster}"),
            format!("--initial-cluster-token={}", dir.display()),
            "--initial-cluster-state=new".to_string(),
        ];
        Member {
            name: name.to_string(),
            client_url,
            args,
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the etcd log file");
        let err_log = log.try_clone().expect("clone the log file handle");
        let child = Command::new(ETCD)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn();
        match child {
            Ok(child) => self.child = Some(child),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "the `{ETCD}` binary was not found on PATH: install it (apt-get install etcd-server); \
                 the etcd tests do not skip"
            ),
            Err(e) => panic!("starting {ETCD}: {e}"),
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("etcd is running").id()
    }

    /// Panics with the log tail when the process has already exited.
    fn check_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!(
                "etcd member {} exited ({status}):\n{}",
                self.name,
                log_tail(&self.log)
            );
        }
    }

    /// Polls a real request until it succeeds: the port opens long before etcd has a
    /// leader and answers.
    async fn wait_ready(&mut self, options: ConnectOptions) {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            self.check_running();
            if probe(&self.client_url, options.clone()).await {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "etcd member {} did not answer within {READY_DEADLINE:?}:\n{}",
                    self.name,
                    log_tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn probe(url: &str, options: ConnectOptions) -> bool {
    let attempt = async {
        let mut client = Client::connect([url], Some(options)).await.ok()?;
        client.get("/conflux-test-ready", None).await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(_))
    )
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[derive(Clone, Copy)]
struct Ports {
    client: u16,
    peer: u16,
    metrics: u16,
}

impl Ports {
    /// Three ports the kernel considers free, all held until all are chosen so that
    /// they differ from each other.
    fn free() -> Ports {
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
            .collect();
        let port = |i: usize| listeners[i].local_addr().expect("local address").port();
        Ports {
            client: port(0),
            peer: port(1),
            metrics: port(2),
        }
    }
}

/// A single-member etcd.
pub struct EtcdServer {
    dir: TempDir,
    member: Member,
    tls: Option<TlsFiles>,
    admin: Option<(String, String)>,
}

impl EtcdServer {
    /// A plaintext etcd, ready to answer.
    pub async fn start() -> EtcdServer {
        Self::start_with(&[]).await
    }

    /// A plaintext etcd with extra command-line flags (e.g. `--auth-token-ttl=2`).
    pub async fn start_with(extra: &[&str]) -> EtcdServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self::create(dir, "http", None);
        server
            .member
            .args
            .extend(extra.iter().map(|s| s.to_string()));
        server.start_member().await;
        server
    }

    /// An etcd serving clients over TLS only, requiring a client certificate signed by
    /// its own CA; [`EtcdServer::tls_files`] gives the client's side.
    pub async fn start_tls() -> EtcdServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let (server_files, client_files) = write_certificates(dir.path());
        let mut server = Self::create(dir, "https", Some(client_files));
        server.member.args.extend([
            format!("--cert-file={}", server_files.cert.display()),
            format!("--key-file={}", server_files.key.display()),
            format!("--trusted-ca-file={}", server_files.ca.display()),
            "--client-cert-auth".to_string(),
        ]);
        server.start_member().await;
        server
    }

    fn create(dir: TempDir, scheme: &str, tls: Option<TlsFiles>) -> EtcdServer {
        let ports = Ports::free();
        let cluster = format!("default=http://127.0.0.1:{}", ports.peer);
        let member = Member::new("default", dir.path(), ports, &cluster, scheme);
        EtcdServer {
            dir,
            member,
            tls,
            admin: None,
        }
    }

    async fn start_member(&mut self) {
        self.member.spawn();
        let options = self.connect_options();
        self.member.wait_ready(options).await;
    }

    /// `http://127.0.0.1:PORT`, or `https://` for a TLS server.
    pub fn endpoint(&self) -> String {
        self.member.client_url.clone()
    }

    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.member.pid()
    }

    /// Options for an administrative client: TLS material and, once auth is on, root.
    fn connect_options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
        if let Some(tls) = &self.tls {
            options = options.with_tls(client_tls(tls));
        }
        if let Some((user, password)) = &self.admin {
            options = options.with_user(user.clone(), password.clone());
        }
        options
    }

    /// An administrative client (root once [`EtcdServer::enable_auth`] ran).
    pub async fn client(&self) -> Client {
        Client::connect([self.endpoint()], Some(self.connect_options()))
            .await
            .expect("connect to the test etcd")
    }

    /// Puts `key`; returns the revision of the put.
    pub async fn put(&self, key: &str, value: &str) -> i64 {
        let resp = self
            .client()
            .await
            .put(key, value, None)
            .await
            .expect("put");
        resp.header().expect("header").revision()
    }

    /// Deletes `key`; returns the revision of the delete.
    pub async fn delete(&self, key: &str) -> i64 {
        let resp = self.client().await.delete(key, None).await.expect("delete");
        resp.header().expect("header").revision()
    }

    /// Compacts the history up to `revision`.
    pub async fn compact(&self, revision: i64) {
        self.client()
            .await
            .compact(revision, None)
            .await
            .expect("compact");
    }

    /// The current store revision.
    pub async fn revision(&self) -> i64 {
        let resp = self.client().await.get("/", None).await.expect("get");
        resp.header().expect("header").revision()
    }

    /// SIGKILL, as a crash would: nothing is flushed beyond what etcd already synced.
    pub fn kill(&mut self) {
        self.member.kill();
    }

    /// Starts the killed etcd again on the same data dir and ports.
    pub async fn restart(&mut self) {
        self.member.kill();
        self.start_member().await;
    }

    /// Kills etcd, deletes its data and starts a new one on the same ports and cluster
    /// token: the revision starts over (as a wiped or re-created cluster does).
    pub async fn wipe_and_restart(&mut self) {
        self.member.kill();
        let data = self.dir.path().join(format!("{}.data", self.member.name));
        std::fs::remove_dir_all(&data).expect("remove the etcd data dir");
        self.start_member().await;
    }

    /// Turns on authentication with [`ROOT`] and [`READER`], who may only read keys
    /// starting with `read_prefix`. The harness's own client acts as root from then on.
    pub async fn enable_auth(&mut self, read_prefix: &str) {
        let mut client = self.client().await;
        let (root, root_password) = ROOT;
        let (reader, reader_password) = READER;
        client
            .user_add(root, root_password, None)
            .await
            .expect("add root");
        client.role_add("root").await.expect("add the root role");
        client
            .user_grant_role(root, "root")
            .await
            .expect("grant root");
        client
            .user_add(reader, reader_password, None)
            .await
            .expect("add reader");
        client.role_add("read-only").await.expect("add role");
        client
            .role_grant_permission("read-only", Permission::read(read_prefix).with_prefix())
            .await
            .expect("grant read");
        client
            .user_grant_role(reader, "read-only")
            .await
            .expect("grant role");
        client.auth_enable().await.expect("enable auth");
        self.admin = Some((root.to_string(), root_password.to_string()));
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.member.kill();
    }
}

/// Several etcd members forming one cluster.
pub struct EtcdCluster {
    _dir: TempDir,
    members: Vec<Member>,
}

impl EtcdCluster {
    /// `size` members, all answering.
    pub async fn start(size: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<Ports> = (0..size).map(|_| Ports::free()).collect();
        let cluster = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}=http://127.0.0.1:{}", p.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| Member::new(&format!("m{i}"), dir.path(), *p, &cluster, "http"))
            .collect();
        for member in &mut members {
            member.spawn();
        }
        for member in &mut members {
            member.wait_ready(ConnectOptions::new()).await;
        }
        EtcdCluster { _dir: dir, members }
    }

    /// Every member's client URL, killed ones included.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// A client of one running member.
    pub async fn client(&self) -> Client {
        let member = self
            .members
            .iter()
            .find(|m| m.child.is_some())
            .expect("a running member");
        Client::connect([&member.client_url], None)
            .await
            .expect("connect")
    }

    pub async fn put(&self, key: &str, value: &str) -> i64 {
        let resp = self
            .client()
            .await
            .put(key, value, None)
            .await
            .expect("put");
        resp.header().expect("header").revision()
    }

    /// SIGKILLs member `index`.
    pub fn kill_member(&mut self, index: usize) {
        self.members[index].kill();
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.kill();
        }
    }
}

fn client_tls(files: &TlsFiles) -> TlsOptions {
    let read = |path: &Path| std::fs::read(path).expect("read TLS file");
    TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read(&files.ca)))
        .identity(Identity::from_pem(read(&files.cert), read(&files.key)))
}

/// Writes a CA, a server certificate for 127.0.0.1 and localhost, and a client
/// certificate into `dir`; returns the server's files and the client's files.
fn write_certificates(dir: &Path) -> (TlsFiles, TlsFiles) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "conflux test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |name: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &issuer).expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    };
    let server = leaf(
        "etcd",
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let client = leaf("conflux", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth);

    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    };
    let ca = write("ca.pem", &ca_cert.pem());
    let server_files = TlsFiles {
        ca: ca.clone(),
        cert: write("server.pem", &server.0),
        key: write("server-key.pem", &server.1),
    };
    let client_files = TlsFiles {
        ca,
        cert: write("client.pem", &client.0),
        key: write("client-key.pem", &client.1),
    };
    (server_files, client_files)
}
