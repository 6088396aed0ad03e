//! The smallest DNS client that answers `lookupSRV`: one SRV question over UDP to the
//! first `nameserver` of `/etc/resolv.conf`, with a short timeout. The standard
//! library resolves addresses (`lookupIP`) but not SRV records, and a full resolver
//! crate would be a large dependency for one rarely used template function.
//!
//! Not handled, by choice: TCP fallback for truncated answers (the records that fit
//! in 512 bytes are used), search domains, and retries on other nameservers. Any
//! failure is an error, which the template function turns into an empty list as
//! confd does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// One SRV record, as Go's `net.SRV` (the target keeps its trailing dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub target: String,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("no nameserver in /etc/resolv.conf")]
    NoNameserver,
    #[error("invalid name {0:?}")]
    InvalidName(String),
    #[error("malformed DNS response: {0}")]
    Malformed(&'static str),
    #[error("DNS server answered with rcode {0}")]
    Rcode(u16),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;
const HEADER_LEN: usize = 12;

/// Go's `net.LookupSRV(service, proto, name)`, sorted as confd sorts it.
pub fn lookup_srv(
    service: &str,
    proto: &str,
    name: &str,
    timeout: Duration,
) -> Result<Vec<Srv>, DnsError> {
    let resolv_conf = std::fs::read_to_string("/etc/resolv.conf")?;
    let server = nameserver(&resolv_conf).ok_or(DnsError::NoNameserver)?;
    let mut records = query_srv(server, &srv_name(service, proto, name), timeout)?;
    sort_like_confd(&mut records);
    Ok(records)
}

/// `_service._proto.name`, or `name` alone when both are empty (as Go does).
fn srv_name(service: &str, proto: &str, name: &str) -> String {
    if service.is_empty() && proto.is_empty() {
        name.to_string()
    } else {
        format!("_{service}._{proto}.{name}")
    }
}

/// The first `nameserver` line that holds an IP address, on port 53.
fn nameserver(resolv_conf: &str) -> Option<SocketAddr> {
    resolv_conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next()?.parse::<IpAddr>().ok())
            .flatten()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// confd sorts by the string `Target+Port+Priority+Weight`, not by priority.
fn sort_like_confd(records: &mut [Srv]) {
    records.sort_by_cached_key(|r| format!("{}{}{}{}", r.target, r.port, r.priority, r.weight));
}

/// Asks `server` for the SRV records of `qname` and waits up to `timeout`.
pub fn query_srv(server: SocketAddr, qname: &str, timeout: Duration) -> Result<Vec<Srv>, DnsError> {
    let id: u16 = rand::random();
    let query = encode_query(id, qname)?;
    let local: IpAddr = match server {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((local, 0))?;
    // Connecting drops datagrams from any other source.
    socket.connect(server)?;
    socket.send(&query)?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into());
        }
        socket.set_read_timeout(Some(left))?;
        let n = socket.recv(&mut buf)?;
        // A late answer to an earlier query carries another id: wait for ours.
        if buf[..n].len() >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            return decode_response(id, &buf[..n]);
        }
    }
}

/// A standard query (recursion desired) for the SRV records of `qname`.
pub fn encode_query(id: u16, qname: &str) -> Result<Vec<u8>, DnsError> {
    let mut packet = Vec::with_capacity(HEADER_LEN + qname.len() + 6);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    packet.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    packet.extend_from_slice(&[0; 6]); // AN, NS, AR counts
    encode_name(qname, &mut packet)?;
    packet.extend_from_slice(&TYPE_SRV.to_be_bytes());
    packet.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(packet)
}

fn encode_name(name: &str, out: &mut Vec<u8>) -> Result<(), DnsError> {
    let invalid = || DnsError::InvalidName(name.to_string());
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.len() > 253 {
        return Err(invalid());
    }
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(invalid());
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    Ok(())
}

/// The SRV records in the answer section of a response to query `id`; other record
/// types (a CNAME on the way) are skipped.
pub fn decode_response(id: u16, packet: &[u8]) -> Result<Vec<Srv>, DnsError> {
    let mut r = Reader { packet, pos: 0 };
    if r.u16()? != id {
        return Err(DnsError::Malformed("answer to another query"));
    }
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        return Err(DnsError::Malformed("not a response"));
    }
    if flags & 0x000f != 0 {
        return Err(DnsError::Rcode(flags & 0x000f));
    }
    let questions = r.u16()?;
    let answers = r.u16()?;
    r.pos = HEADER_LEN;
    for _ in 0..questions {
        r.name()?;
        r.take(4)?; // type, class
    }
    let mut records = Vec::new();
    for _ in 0..answers {
        r.name()?;
        let (rtype, class) = (r.u16()?, r.u16()?);
        r.take(4)?; // TTL
        let len = usize::from(r.u16()?);
        let rdata_start = r.pos;
        r.take(len)?;
        if rtype == TYPE_SRV && class == CLASS_IN {
            records.push(decode_srv(packet, rdata_start)?);
        }
    }
    Ok(records)
}

fn decode_srv(packet: &[u8], rdata: usize) -> Result<Srv, DnsError> {
    let mut r = Reader { packet, pos: rdata };
    Ok(Srv {
        priority: r.u16()?,
        weight: r.u16()?,
        port: r.u16()?,
        target: r.name()?,
    })
}

/// A cursor over a DNS message, bounds-checked at every step.
struct Reader<'p> {
    packet: &'p [u8],
    pos: usize,
}

/// Compression pointers a name may follow before it is declared a loop.
const MAX_POINTERS: usize = 32;

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DnsError> {
        let bytes = self
            .packet
            .get(self.pos..self.pos + n)
            .ok_or(DnsError::Malformed("truncated"))?;
        self.pos += n;
        Ok(bytes)
    }

    fn u16(&mut self) -> Result<u16, DnsError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A possibly compressed name as an FQDN with its trailing dot; leaves the
    /// cursor after the name's bytes at its original position.
    fn name(&mut self) -> Result<String, DnsError> {
        let mut name = String::new();
        let mut pos = self.pos;
        let mut after: Option<usize> = None;
        let mut pointers = 0;
        loop {
            let len = *self
                .packet
                .get(pos)
                .ok_or(DnsError::Malformed("truncated name"))?;
            match len & 0xc0 {
                0x00 if len == 0 => {
                    self.pos = after.unwrap_or(pos + 1);
                    break;
                }
                0x00 => {
                    let label = self
                        .packet
                        .get(pos + 1..pos + 1 + usize::from(len))
                        .ok_or(DnsError::Malformed("truncated label"))?;
                    name.push_str(&String::from_utf8_lossy(label));
                    name.push('.');
                    pos += 1 + usize::from(len);
                }
                0xc0 => {
                    let low = *self
                        .packet
                        .get(pos + 1)
                        .ok_or(DnsError::Malformed("truncated pointer"))?;
                    after.get_or_insert(pos + 2);
                    pointers += 1;
                    if pointers > MAX_POINTERS {
                        return Err(DnsError::Malformed("compression loop"));
                    }
                    pos = usize::from(len & 0x3f) << 8 | usize::from(low);
                }
                _ => return Err(DnsError::Malformed("unknown label type")),
            }
        }
        if name.is_empty() {
            name.push('.');
        }
        Ok(name)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn query_encodes_header_question_and_type() {
        let q = encode_query(0xabcd, "_http._tcp.example.com.").unwrap();
        let mut want = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b"\x05_http\x04_tcp\x07example\x03com\x00");
        want.extend_from_slice(&[0, 33, 0, 1]);
        assert_eq!(q, want);
        assert!(encode_query(1, "a..b").is_err());
        assert!(encode_query(1, &"x".repeat(64)).is_err());
    }

    #[test]
    fn srv_name_follows_go() {
        assert_eq!(
            srv_name("etcd", "tcp", "example.com"),
            "_etcd._tcp.example.com"
        );
        assert_eq!(
            srv_name("", "", "_x._udp.example.com"),
            "_x._udp.example.com"
        );
    }

    #[test]
    fn nameserver_is_the_first_ip() {
        let conf =
            "# comment\nsearch lan\nnameserver bogus\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n";
        assert_eq!(nameserver(conf), Some("10.0.0.2:53".parse().unwrap()));
        assert_eq!(
            nameserver("nameserver ::1"),
            Some("[::1]:53".parse().unwrap())
        );
        assert_eq!(nameserver("search lan"), None);
    }

    /// A response to `query` with one SRV answer per record; names in answers point
    /// back at the question, and a target equal to the first one is compressed too.
    pub(crate) fn respond(query: &[u8], records: &[Srv]) -> Vec<u8> {
        let mut p = query[..2].to_vec();
        p.extend_from_slice(&[0x81, 0x80, 0, 1]);
        p.extend_from_slice(&(records.len() as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(&query[HEADER_LEN..]);
        let mut first_target: Option<(String, usize)> = None;
        for r in records {
            p.extend_from_slice(&[0xc0, 12, 0, 33, 0, 1, 0, 0, 0, 60]);
            let mut rdata = Vec::new();
            for v in [r.priority, r.weight, r.port] {
                rdata.extend_from_slice(&v.to_be_bytes());
            }
            let target_at = p.len() + 2 + rdata.len();
            match &first_target {
                Some((t, at)) if *t == r.target => rdata.extend_from_slice(&[0xc0, *at as u8]),
                _ => {
                    encode_name(&r.target, &mut rdata).unwrap();
                    first_target.get_or_insert((r.target.clone(), target_at));
                }
            }
            p.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            p.extend_from_slice(&rdata);
        }
        p
    }

    fn srv(target: &str, port: u16, priority: u16, weight: u16) -> Srv {
        Srv {
            target: target.into(),
            port,
            priority,
            weight,
        }
    }

    #[test]
    fn response_decodes_with_compression() {
        let query = encode_query(7, "_x._tcp.example.com").unwrap();
        let records = [
            srv("b.example.com.", 80, 1, 5),
            srv("b.example.com.", 81, 2, 5),
            srv("a.example.com.", 443, 0, 0),
        ];
        let decoded = decode_response(7, &respond(&query, &records)).unwrap();
        assert_eq!(decoded, records);
    }

    #[test]
    fn bad_responses_are_errors() {
        let query = encode_query(7, "x.example").unwrap();
        let ok = respond(&query, &[srv("t.", 1, 1, 1)]);
        assert!(matches!(
            decode_response(8, &ok),
            Err(DnsError::Malformed(_))
        ));
        assert!(matches!(
            decode_response(7, &ok[..ok.len() - 3]),
            Err(DnsError::Malformed(_))
        ));
        let mut nxdomain = ok.clone();
        nxdomain[3] = 0x83;
        assert!(matches!(
            decode_response(7, &nxdomain),
            Err(DnsError::Rcode(3))
        ));
        // A pointer to itself must not loop forever.
        let mut looped = ok.clone();
        let at = HEADER_LEN;
        looped[at] = 0xc0;
        looped[at + 1] = at as u8;
        assert!(matches!(
            decode_response(7, &looped),
            Err(DnsError::Malformed(_))
        ));
    }

    #[test]
    fn confd_order_is_by_target_then_port_string() {
        let mut r = vec![srv("b.", 80, 0, 0), srv("a.", 9, 0, 0), srv("a.", 10, 0, 0)];
        sort_like_confd(&mut r);
        // "a.100" < "a.900": string order, as confd.
        assert_eq!(
            r,
            vec![srv("a.", 10, 0, 0), srv("a.", 9, 0, 0), srv("b.", 80, 0, 0)]
        );
    }

    #[test]
    fn a_silent_or_closed_port_is_an_error() {
        // Tests stay on loopback: no query ever leaves for the real nameserver.
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(query_srv(port, "_x._tcp.example.com", Duration::from_millis(200)).is_err());
    }

    #[test]
    fn query_against_a_fake_server_on_loopback() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let records = vec![
            srv("web1.example.com.", 8080, 10, 60),
            srv("web2.example.com.", 8081, 10, 40),
        ];
        let answer = records.clone();
        let fake = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let question = buf[HEADER_LEN..n].to_vec();
            server.send_to(&respond(&buf[..n], &answer), from).unwrap();
            question
        });
        let got = query_srv(addr, "_http._tcp.example.com", Duration::from_secs(5)).unwrap();
        let question = fake.join().unwrap();
        assert_eq!(got, records);
        assert!(question.starts_with(b"\x05_http\x04_tcp\x07example\x03com\x00"));
    }
}
