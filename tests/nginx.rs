//! The gateway's real components for tests: the system's nginx run as a non-daemon with
//! its pid file, logs and temp paths in a temp dir; small upstream HTTP servers that
//! answer every request with their own name (and a `/health` that can be made to
//! fail); and a tiny HTTP client.
//!
//! All std, no HTTP crate: what is under test is nginx and the config conflux rendered
//! for it, and a few dozen lines of HTTP/1.1 keep the harness free of a client whose
//! own pooling or retries could hide a failed request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Where Debian installs nginx (`.ci/run` installs the package).
pub const NGINX: &str = "/usr/sbin/nginx";

/// How long nginx may take to start answering or to stop.
const NGINX_DEADLINE: Duration = Duration::from_secs(10);

/// A loopback address with a port that was free a moment ago: bind port 0, read the
/// port the kernel chose, release it.
pub fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").to_string()
}

/// Panics unless nginx is installed: a missing nginx fails the gateway tests, it
/// never skips them.
pub fn require_nginx() {
    assert!(
        Path::new(NGINX).exists(),
        "{NGINX} not found: the gateway tests need Debian's nginx (apt-get install nginx; .ci/run installs it)"
    );
}

/// A running nginx master (`daemon off`), stopped on drop.
pub struct Nginx {
    child: Child,
    log: PathBuf,
    addr: String,
}

impl Nginx {
    /// Runs `nginx -p <prefix>/ -c <conf> -e stderr -g 'daemon off;'` with its output in
    /// `<prefix>/nginx.stderr`, and waits until it answers HTTP on the address of the
    /// first `listen` in `conf`.
    pub fn start(prefix: &Path, conf: &Path) -> Nginx {
        require_nginx();
        let addr = first_listen(conf);
        let log = prefix.join("nginx.stderr");
        let out = std::fs::File::create(&log).expect("create nginx log");
        let err = out.try_clone().expect("clone log handle");
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(format!("{}/", prefix.display()))
            .arg("-c")
            .arg(conf)
            .args(["-e", "stderr", "-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group, so a kill reaches the workers too.
            .process_group(0)
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx { child, log, addr };
        nginx.wait_until_answering();
        nginx
    }

    /// The address of its first `listen`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Waits until no worker of an older configuration is left: after a reload, nginx
    /// keeps the old workers (titled "worker process is shutting down") until their
    /// connections end, and a new connection may still reach one for a moment.
    pub fn wait_old_workers_gone(&self) {
        let master = self.child.id();
        let deadline = Instant::now() + NGINX_DEADLINE;
        while old_workers(master) > 0 {
            assert!(
                Instant::now() < deadline,
                "nginx's old workers did not exit within {NGINX_DEADLINE:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// What nginx wrote on stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_until_answering(&mut self) {
        let deadline = Instant::now() + NGINX_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait nginx") {
                panic!("nginx exited ({status}) before answering:\n{}", self.log());
            }
            if try_get(&self.addr, "/", None).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not answer on {} within {NGINX_DEADLINE:?}:\n{}",
                self.addr,
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Children of `master` whose process title says they are shutting down.
/// The workers of an earlier configuration still alive: those shutting down, and those
/// of an older generation that the master has not told to stop yet (right after a
/// reload the old workers still accept connections for a moment before they get the
/// signal, and "shutting down" alone missed them: a request after `settle` reached an
/// instance removed from the config). A generation's workers are forked together, so
/// a worker started more than 50 ms before the newest one is of an older generation.
fn old_workers(master: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    // (start time in clock ticks, shutting down) of each worker of `master`.
    let workers: Vec<(u64, bool)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let dir = e.path();
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            // After the command: state, ppid, ... starttime is the 20th.
            let parent = fields.get(1)?.parse::<u32>().ok()?;
            let started = fields.get(19)?.parse::<u64>().ok()?;
            let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
            (parent == master && cmdline.contains("worker process"))
                .then(|| (started, cmdline.contains("shutting down")))
        })
        .collect();
    let newest = workers
        .iter()
        .filter(|(_, stopping)| !stopping)
        .map(|(started, _)| *started)
        .max()
        .unwrap_or(0);
    workers
        .iter()
        .filter(|(started, stopping)| *stopping || started + 5 < newest)
        .count()
}

impl Drop for Nginx {
    /// SIGQUIT (graceful stop), then SIGKILL to the whole group after a deadline.
    fn drop(&mut self) {
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGQUIT);
        let deadline = Instant::now() + NGINX_DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The address of the first `listen` directive in an nginx config.
fn first_listen(conf: &Path) -> String {
    let text =
        std::fs::read_to_string(conf).unwrap_or_else(|e| panic!("read {}: {e}", conf.display()));
    text.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("listen "))
        .and_then(|rest| rest.split([' ', ';']).next())
        .unwrap_or_else(|| panic!("no listen directive in {}", conf.display()))
        .to_string()
}

/// A small HTTP/1.1 server on loopback answering every request with its own name,
/// counting requests and recording their paths. Stopped on drop.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    hits: AtomicUsize,
    paths: Mutex<Vec<String>>,
    /// Open connections, so drop can shut them down (nginx keeps idle ones open).
    conns: Mutex<Vec<TcpStream>>,
    /// `GET /health` answers 503 (see [`Upstream::set_healthy`]).
    unhealthy: AtomicBool,
}

impl Upstream {
    pub fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let (name, shared) = (name.to_string(), shared.clone());
            thread::spawn(move || accept_loop(listener, &name, &shared))
        };
        Upstream {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:<port>`, as it goes in an instance's `addr`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// The request paths seen so far, in order.
    pub fn paths(&self) -> Vec<String> {
        self.shared.paths.lock().expect("paths lock").clone()
    }

    /// Makes `GET /health` answer 503 (`false`) or 200 (`true`, the default) while
    /// every other path still answers 200: a health endpoint for a `conflux register`
    /// check that fails while the server itself still serves.
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.unhealthy.store(!healthy, Ordering::SeqCst);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept; the loop sees `stop` and returns.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        for conn in self.shared.conns.lock().expect("conns lock").drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, name: &str, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        if let Ok(clone) = stream.try_clone() {
            shared.conns.lock().expect("conns lock").push(clone);
        }
        let (name, shared) = (name.to_string(), shared.clone());
        thread::spawn(move || serve(stream, &name, &shared));
    }
}

/// Serves requests on one connection until the peer closes it or asks to.
fn serve(stream: TcpStream, name: &str, shared: &Shared) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    serve_requests(&mut reader, &mut writer, name, shared);
    // A clone of this socket stays in `conns`: dropping ours would not close it.
    let _ = writer.shutdown(Shutdown::Both);
}

fn serve_requests(reader: &mut impl BufRead, writer: &mut impl Write, name: &str, shared: &Shared) {
    while let Some(req) = read_request(reader) {
        shared.hits.fetch_add(1, Ordering::SeqCst);
        shared
            .paths
            .lock()
            .expect("paths lock")
            .push(req.path.clone());
        let connection = if req.keep_alive {
            "keep-alive"
        } else {
            "close"
        };
        let status = if req.path == "/health" && shared.unhealthy.load(Ordering::SeqCst) {
            "503 Service Unavailable"
        } else {
            "200 OK"
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{name}",
            name.len()
        );
        if writer.write_all(response.as_bytes()).is_err() || !req.keep_alive {
            return;
        }
    }
}

struct Request {
    path: String,
    keep_alive: bool,
}

/// Reads one request (line, headers, a Content-Length body); `None` at end of stream
/// or on anything unreadable.
fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (_method, path, version) = (parts.next()?, parts.next()?, parts.next()?);
    // HTTP/1.1 keeps the connection by default, HTTP/1.0 closes it.
    let mut keep_alive = version == "HTTP/1.1";
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().ok()?,
            "connection" if value.eq_ignore_ascii_case("close") => keep_alive = false,
            "connection" if value.eq_ignore_ascii_case("keep-alive") => keep_alive = true,
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        path: path.to_string(),
        keep_alive,
    })
}

/// `GET path` on `addr` with `Host: host` (default `localhost`) and
/// `Connection: close`: the status and the body. Panics when there is no HTTP answer.
pub fn get(addr: &str, path: &str, host: Option<&str>) -> (u16, String) {
    try_get(addr, path, host).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// The same, with a failure to connect or read as an error.
pub fn try_get(addr: &str, path: &str, host: Option<&str>) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let timeout = Some(Duration::from_secs(10));
    stream
        .set_read_timeout(timeout)
        .map_err(|e| e.to_string())?;
    let host = host.unwrap_or("localhost");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `GET path` until `want` holds for the answer or `deadline` passes; returns the
/// last answer (or panics with it).
#[track_caller]
pub fn wait_for(
    addr: &str,
    path: &str,
    host: Option<&str>,
    deadline: Duration,
    want: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let end = Instant::now() + deadline;
    loop {
        let last = try_get(addr, path, host);
        if let Ok((status, body)) = &last
            && want(*status, body)
        {
            return (*status, body.clone());
        }
        assert!(
            Instant::now() < end,
            "GET http://{addr}{path}: no wanted answer within {deadline:?}; last: {last:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn upstream_answers_with_its_name_and_keeps_connections_alive() {
    let up = Upstream::start("alpha");
    let mut conn = TcpStream::connect(up.addr()).expect("connect");
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    for path in ["/one", "/two"] {
        write!(conn, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        let mut status = String::new();
        reader.read_line(&mut status).expect("status line");
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut length = 0;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).expect("header");
            if h.trim().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().expect("length");
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("body");
        assert_eq!(body, b"alpha");
    }
    assert_eq!(up.hits(), 2);
    assert_eq!(up.paths(), ["/one", "/two"]);
    assert_eq!(get(&up.addr(), "/three", None), (200, "alpha".to_string()));
}
