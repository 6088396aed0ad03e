//! A DNS server for tests, on 127.0.0.1 only: it answers SRV questions from a fixed
//! zone over UDP and TCP on one port, NXDOMAIN for any other name, and can truncate
//! every UDP answer so that a client must ask again over TCP. It records what it was
//! asked, and how. The wire format is written here by hand, independently of the
//! resolver under test, so a test proves what goes over the wire.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Srv;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

type Zone = BTreeMap<String, Vec<Srv>>;
type Log = Arc<Mutex<Vec<(Transport, String)>>>;

/// Stops its threads when dropped.
pub struct FakeDns {
    pub port: u16,
    asked: Log,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// How often the server threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);

impl FakeDns {
    /// Answers from `zone` (names with their trailing dot); with `truncate_udp`, every
    /// UDP answer is empty and has the TC bit set.
    pub fn start(zone: Zone, truncate_udp: bool) -> FakeDns {
        let (udp, tcp) = bind_pair();
        let port = udp.local_addr().unwrap().port();
        let asked = Log::default();
        let stop = Arc::new(AtomicBool::new(false));
        let zone = Arc::new(zone);
        let threads = vec![
            spawn_udp(udp, Arc::clone(&zone), truncate_udp, &asked, &stop),
            spawn_tcp(tcp, zone, &asked, &stop),
        ];
        FakeDns {
            port,
            asked,
            stop,
            threads,
        }
    }

    /// A bound UDP port that never answers.
    pub fn silent() -> FakeDns {
        let (udp, _tcp) = bind_pair();
        let port = udp.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let keep = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !keep.load(Ordering::Relaxed) {
                std::thread::sleep(POLL);
            }
            drop(udp);
        });
        FakeDns {
            port,
            asked: Log::default(),
            stop,
            threads: vec![thread],
        }
    }

    /// Every question so far, as (transport, name with its trailing dot).
    pub fn asked(&self) -> Vec<(Transport, String)> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A UDP socket and a TCP listener on the same loopback port.
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

fn spawn_udp(
    socket: UdpSocket,
    zone: Arc<Zone>,
    truncate: bool,
    asked: &Log,
    stop: &Arc<AtomicBool>,
) -> JoinHandle<()> {
    let (asked, stop) = (Arc::clone(asked), Arc::clone(stop));
    socket.set_read_timeout(Some(POLL)).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            if let Some(answer) = answer(&buf[..n], &zone, truncate, Transport::Udp, &asked) {
                let _ = socket.send_to(&answer, from);
            }
        }
    })
}

fn spawn_tcp(
    listener: TcpListener,
    zone: Arc<Zone>,
    asked: &Log,
    stop: &Arc<AtomicBool>,
) -> JoinHandle<()> {
    let (asked, stop) = (Arc::clone(asked), Arc::clone(stop));
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => serve_tcp(stream, &zone, &asked, &stop),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    })
}

/// Messages on a TCP connection carry a two-byte length before each.
fn serve_tcp(mut stream: TcpStream, zone: &Zone, asked: &Log, stop: &AtomicBool) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(POLL)).unwrap();
    let mut len = [0u8; 2];
    while !stop.load(Ordering::Relaxed) {
        match stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => return,
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.set_read_timeout(None).unwrap();
        if stream.read_exact(&mut query).is_err() {
            return;
        }
        stream.set_read_timeout(Some(POLL)).unwrap();
        if let Some(answer) = answer(&query, zone, false, Transport::Tcp, asked) {
            let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&answer);
            if stream.write_all(&framed).is_err() {
                return;
            }
        }
    }
}

const HEADER_LEN: usize = 12;

/// The response to `query`, or `None` for something that is not one question.
fn answer(
    query: &[u8],
    zone: &Zone,
    truncate: bool,
    transport: Transport,
    asked: &Log,
) -> Option<Vec<u8>> {
    let (name, question_end) = question(query)?;
    asked.lock().unwrap().push((transport, name.clone()));
    let records = match zone.get(&name.to_ascii_lowercase()) {
        Some(records) if !truncate => records.as_slice(),
        _ => &[],
    };
    let mut flags: u16 = 0x8180; // QR, RD, RA
    if truncate {
        flags |= 0x0200;
    } else if !zone.contains_key(&name.to_ascii_lowercase()) {
        flags |= 3; // NXDOMAIN
    }
    let mut p = query[..2].to_vec();
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    p.extend_from_slice(&(records.len() as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(&query[HEADER_LEN..question_end]);
    for r in records {
        // Owner: a pointer to the question's name at offset 12; type SRV, class IN, TTL 60.
        p.extend_from_slice(&[0xc0, 12, 0, 33, 0, 1, 0, 0, 0, 60]);
        let mut rdata = Vec::new();
        for v in [r.priority, r.weight, r.port] {
            rdata.extend_from_slice(&v.to_be_bytes());
        }
        encode_name(&r.target, &mut rdata);
        p.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        p.extend_from_slice(&rdata);
    }
    Some(p)
}

/// The question's name (with its trailing dot) and where the question ends.
fn question(query: &[u8]) -> Option<(String, usize)> {
    if query.get(4..6)? != [0, 1] {
        return None;
    }
    let mut pos = HEADER_LEN;
    let mut name = String::new();
    loop {
        let len = usize::from(*query.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        name.push_str(std::str::from_utf8(query.get(pos..pos + len)?).ok()?);
        name.push('.');
        pos += len;
    }
    Some((name, pos + 4))
}

fn encode_name(name: &str, out: &mut Vec<u8>) {
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}
