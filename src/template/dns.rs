//! SRV lookups for confd's `lookupSRV`, through `hickory-resolver` configured from
//! `/etc/resolv.conf` as libc would be: every nameserver, the search domains and
//! `ndots`, and a retry over TCP when a UDP answer comes back truncated. What this
//! module adds is confd's shape of the call (Go's `net.LookupSRV` name building, confd's
//! sort order) and a way to run the async resolver from a synchronous template
//! function. Turning a failure into an empty list, as confd does, is the caller's.
//!
//! hickory rather than a hand-written client: a resolver has to get search lists,
//! TCP fallback, name compression and several nameservers right, and hickory is the
//! maintained Rust resolver (the one the tokio ecosystem uses). Its TLS, HTTPS and
//! DNSSEC features are left off; only the plain UDP/TCP transport is built.

use std::io;
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

#[cfg(test)]
mod fake_server;

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
    #[error("cannot read {RESOLV_CONF}: {0}")]
    ResolvConf(#[source] io::Error),
    #[error("cannot use {RESOLV_CONF}: {0}")]
    Config(#[source] NetError),
    #[error("cannot start a runtime for the lookup: {0}")]
    Runtime(#[source] io::Error),
    #[error("the lookup thread panicked")]
    Panicked,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Lookup(NetError),
}

const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Go's `net.LookupSRV(service, proto, name)` with the system's resolver settings,
/// sorted as confd sorts it, within `timeout` in all.
pub fn lookup_srv(
    service: &str,
    proto: &str,
    name: &str,
    timeout: Duration,
) -> Result<Vec<Srv>, DnsError> {
    // Read at every lookup, as Go and libc notice an edited resolv.conf.
    let text = std::fs::read(RESOLV_CONF).map_err(DnsError::ResolvConf)?;
    let (config, options) =
        hickory_resolver::system_conf::parse_resolv_conf(text).map_err(DnsError::Config)?;
    let mut records = resolve(config, options, &srv_name(service, proto, name), timeout)?;
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

/// confd sorts by the string `Target+Port+Priority+Weight`, not by priority.
fn sort_like_confd(records: &mut [Srv]) {
    records.sort_by_cached_key(|r| format!("{}{}{}{}", r.target, r.port, r.priority, r.weight));
}

/// The SRV records of `qname`, asked of the servers in `config`.
///
/// Template functions are synchronous, and a render runs on tokio's blocking pool in
/// the daemon, on plain threads in one-shot runs and tests, and could one day run on a
/// runtime worker, where `block_on` panics. So the lookup gets a thread and a
/// current-thread runtime of its own: that works from all three. The alternatives
/// were a runtime kept for the process (a second set of threads for a rarely used
/// function) and borrowing the caller's runtime (absent in one-shot paths). A thread
/// and a runtime cost tens of microseconds, nothing next to a DNS round trip.
fn resolve(
    config: ResolverConfig,
    mut options: ResolverOpts,
    qname: &str,
    timeout: Duration,
) -> Result<Vec<Srv>, DnsError> {
    // One silent nameserver must not eat the whole budget before the next is asked.
    options.timeout = options.timeout.min(timeout);
    // SRV records never come from /etc/hosts.
    options.use_hosts_file = ResolveHosts::Never;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(DnsError::Runtime)?;
                runtime.block_on(query(config, options, qname, timeout))
            })
            .join()
            .unwrap_or(Err(DnsError::Panicked))
    })
}

/// Must run inside the runtime: the resolver spawns its connection tasks on it.
async fn query(
    config: ResolverConfig,
    options: ResolverOpts,
    qname: &str,
    timeout: Duration,
) -> Result<Vec<Srv>, DnsError> {
    let resolver = Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(options)
        .build()
        .map_err(DnsError::Config)?;
    let lookup = tokio::time::timeout(timeout, resolver.srv_lookup(qname))
        .await
        .map_err(|_| DnsError::Timeout(timeout))?
        .map_err(DnsError::Lookup)?;
    // A CNAME on the way is in the answers too.
    Ok(lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => Some(Srv {
                // The wire form (punycode), as Go returns it, with its trailing dot.
                target: srv.target.to_ascii(),
                port: srv.port,
                priority: srv.priority,
                weight: srv.weight,
            }),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use hickory_resolver::system_conf::parse_resolv_conf;

    use super::fake_server::{FakeDns, Transport};
    use super::*;

    fn srv(target: &str, port: u16, priority: u16, weight: u16) -> Srv {
        Srv {
            target: target.into(),
            port,
            priority,
            weight,
        }
    }

    /// A resolver set-up parsed from `resolv_conf` (which must name 127.0.0.1), sent
    /// to `server`'s port: nothing leaves loopback.
    fn config_for(resolv_conf: &str, server: &FakeDns) -> (ResolverConfig, ResolverOpts) {
        let (mut config, options) = parse_resolv_conf(resolv_conf).unwrap();
        let mut servers = config.name_servers().to_vec();
        for s in &mut servers {
            assert!(s.ip.is_loopback(), "tests stay on loopback");
            for c in &mut s.connections {
                c.port = server.port;
            }
        }
        config =
            ResolverConfig::from_parts(config.domain().cloned(), config.search().to_vec(), servers);
        (config, options)
    }

    fn web_records() -> Vec<Srv> {
        vec![
            srv("web2.example.test.", 8081, 10, 40),
            srv("web1.example.test.", 8080, 10, 60),
        ]
    }

    fn zone(name: &str, records: Vec<Srv>) -> BTreeMap<String, Vec<Srv>> {
        BTreeMap::from([(name.to_string(), records)])
    }

    const FIVE_S: Duration = Duration::from_secs(5);
    const LOOPBACK: &str = "nameserver 127.0.0.1\n";
    const WEB: &str = "_http._tcp.example.test.";

    /// `qname` asked of `server`, set up from `resolv_conf`, with 5 s to answer.
    fn ask(server: &FakeDns, resolv_conf: &str, qname: &str) -> Result<Vec<Srv>, DnsError> {
        let (config, options) = config_for(resolv_conf, server);
        resolve(config, options, qname, FIVE_S)
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
    fn a_udp_answer_is_read() {
        let server = FakeDns::start(zone(WEB, web_records()), false);
        assert_eq!(ask(&server, LOOPBACK, WEB).unwrap(), web_records());
        assert_eq!(server.asked(), vec![(Transport::Udp, WEB.to_string())]);
    }

    #[test]
    fn a_truncated_udp_answer_is_asked_again_over_tcp() {
        let server = FakeDns::start(zone(WEB, web_records()), true);
        assert_eq!(ask(&server, LOOPBACK, WEB).unwrap(), web_records());
        let transports: Vec<_> = server.asked().into_iter().map(|(t, _)| t).collect();
        assert_eq!(transports, vec![Transport::Udp, Transport::Tcp]);
    }

    #[test]
    fn a_search_domain_completes_a_relative_name() {
        let server = FakeDns::start(zone("_http._tcp.web.example.test.", web_records()), false);
        let resolv_conf = format!("search example.test\n{LOOPBACK}");
        let got = ask(&server, &resolv_conf, "_http._tcp.web").unwrap();
        assert_eq!(got, web_records());
        let names: Vec<_> = server.asked().into_iter().map(|(_, n)| n).collect();
        assert!(
            names.contains(&"_http._tcp.web.example.test.".to_string()),
            "{names:?}"
        );
    }

    #[test]
    fn an_unknown_name_or_a_silent_server_is_an_error() {
        let server = FakeDns::start(BTreeMap::new(), false);
        assert!(ask(&server, LOOPBACK, WEB).is_err());
        let silent = FakeDns::silent();
        let (config, options) = config_for(LOOPBACK, &silent);
        let err = resolve(config, options, WEB, Duration::from_millis(300));
        assert!(err.is_err(), "{err:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn works_from_spawn_blocking_and_from_a_runtime_worker() {
        let server = Arc::new(FakeDns::start(zone(WEB, web_records()), false));
        let on_pool = Arc::clone(&server);
        let blocking = tokio::task::spawn_blocking(move || ask(&on_pool, LOOPBACK, WEB))
            .await
            .unwrap();
        assert_eq!(blocking.unwrap(), web_records());
        // Where a plain `block_on` would panic.
        assert_eq!(ask(&server, LOOPBACK, WEB).unwrap(), web_records());
    }
}
