//! The egress proxy of agent CLIs, on 127.0.0.1: `CONNECT` tunnels for HTTPS and absolute-form
//! requests (`POST http://host:port/path`) for plain HTTP, to the hosts of `sandbox.agent_hosts`
//! only. In the sandbox, Landlock lets the agent open TCP connections to the proxy's port only.
//!
//! What may be reached:
//! - an entry is `host`, `host:port`, `*.suffix` (subdomains, any port) or an address; with a
//!   port, only that port;
//! - metadata and link-local addresses (169.254.0.0/16, fe80::/10, fd00:ec2::/32, 100.100.100.200)
//!   and metadata names are refused whatever is listed, as are addresses that are not unicast;
//! - a name that resolves to a loopback or private address (DNS rebinding) is refused unless the
//!   list names that host itself (no wildcard) or the address; the well-known provider hosts
//!   (`DEFAULT_AGENT_HOSTS`) reach public addresses only;
//! - addresses embedded in IPv6 (v4-mapped, v4-compatible, NAT64, 6to4) count as their IPv4.
//!
//! The connection goes to the addresses that were checked, never to a second resolution.
//! Every connection, allowed or refused, is a JSON line in the attempt's egress log. A refusal
//! that a change of `sandbox.agent_hosts` would have let through is also sent on
//! [`Proxy::refused`], and the runner stops the agent then, as a configuration error: at once for
//! a local gateway or a provider's API, after [`STRIKES`] refusals for another host (a CLI that
//! retries its endpoint, not a one-off fetch of a page).
//!
//! Credentials: for an endpoint with a [`Held`] key, the proxy adds the provider's header itself,
//! so the agent holds only [`PLACEHOLDER`]. Over plain HTTP this rewrites the request; over HTTPS
//! the proxy terminates TLS with a certificate from a CA made for this proxy alone (its key never
//! leaves memory, its name constraints cover the held hosts only), whose certificate the agent is
//! told to trust, and connects upstream with normal verification (the web's roots, the system's
//! bundle and the user's own CA bundles).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What an agent's environment holds instead of a key the proxy holds.
pub const PLACEHOLDER: &str = "abo-proxy-held";

/// Names of cloud metadata services, refused whatever the list says.
const METADATA_NAMES: [&str; 6] = [
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.internal",
];

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// Listening failed (no port left, say): another attempt may do better.
    #[error("the egress proxy could not listen on 127.0.0.1: {source}")]
    Listen { source: std::io::Error },
    /// The per-run certificate authority could not be made: permanent.
    #[error("the egress proxy could not make its certificate for {host}: {reason}")]
    Certificate { host: String, reason: String },
    /// A CA bundle named by the user is unreadable: permanent until the file is fixed.
    #[error("the CA bundle {path} (from {var}) is unreadable: {reason}")]
    Bundle {
        var: String,
        path: PathBuf,
        reason: String,
    },
}

impl EgressError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Listen { .. })
    }
}

/// The header a provider takes its key in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthHeader {
    /// Anthropic: `x-api-key: KEY`.
    XApiKey,
    /// OpenAI and compatible servers: `Authorization: Bearer KEY`.
    Bearer,
}

/// A key the proxy adds to every request for `host:port`.
#[derive(Clone, PartialEq, Eq)]
pub struct Held {
    pub host: String,
    pub port: u16,
    /// The endpoint speaks HTTPS: the proxy terminates the agent's TLS to add the key.
    pub tls: bool,
    pub header: AuthHeader,
    pub key: String,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("header", &self.header)
            .field("key", &"<held>")
            .finish()
    }
}

/// How to start a proxy.
#[derive(Clone, Debug)]
pub struct Options {
    /// `sandbox.agent_hosts`, plus the backend's own endpoint.
    pub hosts: Vec<String>,
    /// The egress log (JSON lines).
    pub log: PathBuf,
    pub held: Vec<Held>,
    /// PEM bundles trusted upstream besides the web's roots and the system's bundle, each with
    /// the variable that named it.
    pub upstream_ca: Vec<(String, PathBuf)>,
    /// The attempt's `check` tool, answered at [`crate::check::HOST`] (`None`: not offered).
    pub check: Option<crate::check::Door>,
}

/// A running proxy; it stops when dropped.
pub struct Proxy {
    pub port: u16,
    /// The PEM certificate agents must trust, when the proxy terminates TLS for a held key.
    pub ca_pem: Option<String>,
    /// The first refusal a change of `sandbox.agent_hosts` would have avoided.
    pub refused: watch::Receiver<Option<Refusal>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connection the proxy refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub host: String,
    pub port: u16,
    pub why: Why,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// No entry of the list covers the host and port.
    NotListed,
    /// The name resolves to a loopback or private address and is not itself listed.
    LocalNotNamed {
        ip: IpAddr,
        what: &'static str,
    },
    /// Never reachable: a metadata or link-local address or name, or not unicast.
    Forbidden {
        ip: Option<IpAddr>,
        what: &'static str,
    },
    Unresolved {
        error: String,
    },
    /// Not a proxy request: neither CONNECT nor an absolute-form `http://` one.
    NotProxied {
        method: String,
    },
}

impl Refusal {
    /// Whether listing the host in `sandbox.agent_hosts` is what would let it through.
    pub fn by_configuration(&self) -> bool {
        matches!(self.why, Why::NotListed | Why::LocalNotNamed { .. })
    }

    pub fn reason(&self) -> String {
        let Self { host, port, why } = self;
        match why {
            Why::NotListed => format!("{host}:{port} is not in sandbox.agent_hosts"),
            Why::LocalNotNamed { ip, what } => format!(
                "{host} resolves to {ip}, {what}, and sandbox.agent_hosts does not name {host} itself"
            ),
            Why::Forbidden { ip: Some(ip), what } => format!("{host} resolves to {ip}, {what}"),
            Why::Forbidden { ip: None, what } => format!("{host} is {what}"),
            Why::Unresolved { error } => format!("{host} does not resolve: {error}"),
            Why::NotProxied { method } => {
                format!("{method} {host} is neither CONNECT nor an absolute http:// request")
            }
        }
    }
}

/// Ends with the first refusal the configuration would fix (see [`Proxy::refused`]); never
/// without a proxy.
pub async fn first_refusal(refused: Option<watch::Receiver<Option<Refusal>>>) -> String {
    if let Some(mut rx) = refused
        && let Ok(r) = rx.wait_for(Option::is_some).await
        && let Some(r) = r.as_ref()
    {
        return r.reason();
    }
    std::future::pending().await
}

/// Why an attempt fails whose agent was refused a host for `reason`.
pub fn refused_failure(reason: &str) -> String {
    format!(
        "the egress proxy refused a connection: {reason} (a configuration error, not retried: list the host in sandbox.agent_hosts if the agent needs it)"
    )
}

/// One entry of the allowlist.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// Lowercase, without brackets or a trailing dot; for a wildcard, the suffix after `*.`.
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

/// `sandbox.agent_hosts`, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist(Vec<Entry>);

fn normal_host(h: &str) -> String {
    h.trim_matches(['[', ']'])
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// `host`, `host:port`, `[v6]:port`, `v6`: the host and the port if one is given.
pub fn split_host_port(s: &str) -> (String, Option<u16>) {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').unwrap_or((rest, ""));
        return (
            normal_host(h),
            tail.strip_prefix(':').and_then(|p| p.parse().ok()),
        );
    }
    match s.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address.
        Some((h, _)) if h.contains(':') => (normal_host(s), None),
        Some((h, p)) => match p.parse() {
            Ok(p) => (normal_host(h), Some(p)),
            Err(_) => (normal_host(s), None),
        },
        None => (normal_host(s), None),
    }
}

fn same_host(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

impl Allowlist {
    pub fn new(hosts: &[String]) -> Self {
        Self(
            hosts
                .iter()
                .map(|h| {
                    let (host, port) = split_host_port(h);
                    match host.strip_prefix("*.") {
                        Some(suffix) => Entry {
                            host: suffix.to_owned(),
                            wildcard: true,
                            port,
                        },
                        None => Entry {
                            host,
                            wildcard: false,
                            port,
                        },
                    }
                })
                .collect(),
        )
    }

    /// The entry that lets `host:port` through: one naming it exactly first, else a wildcard.
    fn find(&self, host: &str, port: u16) -> Option<&Entry> {
        let port_ok = |e: &Entry| e.port.is_none_or(|p| p == port);
        self.0
            .iter()
            .find(|e| !e.wildcard && same_host(&e.host, host) && port_ok(e))
            .or_else(|| {
                self.0
                    .iter()
                    .find(|e| e.wildcard && host.ends_with(&format!(".{}", e.host)) && port_ok(e))
            })
    }

    /// Whether `host:port` is listed at all (addresses aside).
    pub fn covers(&self, host: &str, port: u16) -> bool {
        self.find(&normal_host(host), port).is_some()
    }

    /// Whether `host:port` may be reached at `addrs` (what it resolved to).
    pub fn judge(&self, host: &str, port: u16, addrs: &[IpAddr]) -> Result<(), Why> {
        let host = normal_host(host);
        if METADATA_NAMES.contains(&host.as_str()) {
            return Err(Why::Forbidden {
                ip: None,
                what: "a cloud metadata name",
            });
        }
        let Some(entry) = self.find(&host, port) else {
            return Err(Why::NotListed);
        };
        let provider = abo_core::config::DEFAULT_AGENT_HOSTS.contains(&host.as_str());
        for ip in addrs {
            match classify(*ip) {
                Class::Public => {}
                Class::Never(what) => {
                    return Err(Why::Forbidden {
                        ip: Some(*ip),
                        what,
                    });
                }
                Class::Local(what) => {
                    let named = !entry.wildcard && !provider;
                    let address_listed = self.0.iter().any(|e| {
                        !e.wildcard
                            && e.host.parse::<IpAddr>().is_ok_and(|a| a == *ip)
                            && e.port.is_none_or(|p| p == port)
                    });
                    if !named && !address_listed {
                        return Err(Why::LocalNotNamed { ip: *ip, what });
                    }
                }
            }
        }
        Ok(())
    }
}

/// What an address is to the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Public,
    /// Loopback or private: only when named.
    Local(&'static str),
    /// Never.
    Never(&'static str),
}

pub fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v) => classify_v4(v),
        IpAddr::V6(v) => classify_v6(v),
    }
}

fn classify_v4(v: Ipv4Addr) -> Class {
    let o = v.octets();
    if v == Ipv4Addr::new(169, 254, 169, 254) || v == Ipv4Addr::new(100, 100, 100, 200) {
        Class::Never("a cloud metadata address")
    } else if v.is_link_local() {
        Class::Never("a link-local address")
    } else if o[0] == 0 || v.is_broadcast() || v.is_multicast() || o[0] >= 240 {
        Class::Never("not a unicast address")
    } else if v.is_loopback() {
        Class::Local("a loopback address")
    } else if v.is_private() || (o[0] == 100 && (64..128).contains(&o[1])) {
        Class::Local("a private address")
    } else {
        Class::Public
    }
}

fn classify_v6(v: Ipv6Addr) -> Class {
    let s = v.segments();
    let embedded = |a: u16, b: u16| Ipv4Addr::from((u32::from(a) << 16) | u32::from(b));
    if let Some(m) = v.to_ipv4_mapped() {
        return classify_v4(m);
    }
    if s[..6] == [0; 6] && s[6] != 0 {
        // v4-compatible (deprecated, still routed by some stacks).
        return classify_v4(embedded(s[6], s[7]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded(s[6], s[7])); // NAT64
    }
    if s[0] == 0x2002 {
        return classify_v4(embedded(s[1], s[2])); // 6to4
    }
    if s[0] == 0xfd00 && s[1] == 0x0ec2 {
        Class::Never("a cloud metadata address")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Class::Never("a link-local address")
    } else if v.is_unspecified() || v.is_multicast() {
        Class::Never("not a unicast address")
    } else if v.is_loopback() {
        Class::Local("a loopback address")
    } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
        Class::Local("a private address")
    } else {
        Class::Public
    }
}

#[derive(Debug, Serialize)]
struct Record<'a> {
    host: &'a str,
    port: u16,
    allowed: bool,
    reason: String,
}

/// The certificate authority of one proxy, and what connects upstream.
struct Tls {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    ca_pem: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
    client: tokio_rustls::TlsConnector,
}

struct State {
    list: Allowlist,
    log: std::sync::Mutex<PathBuf>,
    held: Vec<Held>,
    tls: Option<Tls>,
    refused: watch::Sender<Option<Refusal>>,
    check: Option<crate::check::Door>,
    /// When each host not listed was refused lately.
    strikes: std::sync::Mutex<std::collections::HashMap<(String, u16), Vec<tokio::time::Instant>>>,
}

/// Refusals of one host within [`STRIKE_WINDOW`] that make a retry loop.
pub const STRIKES: usize = 3;
pub const STRIKE_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);

/// Where a request goes, checked.
#[derive(Clone, Debug)]
struct Target {
    host: String,
    port: u16,
    addrs: Vec<SocketAddr>,
    tls: bool,
}

type Body = BoxBody<Bytes, hyper::Error>;

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{body}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Starts a proxy on 127.0.0.1.
pub async fn start(opts: Options) -> Result<Proxy, EgressError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| EgressError::Listen { source })?;
    let port = listener
        .local_addr()
        .map_err(|source| EgressError::Listen { source })?
        .port();
    let over_tls: Vec<Held> = opts.held.iter().filter(|h| h.tls).cloned().collect();
    let tls = if over_tls.is_empty() {
        None
    } else {
        Some(tls(&over_tls, &opts.upstream_ca)?)
    };
    let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
    let (tx, refused) = watch::channel(None);
    let state = Arc::new(State {
        list: Allowlist::new(&opts.hosts),
        log: std::sync::Mutex::new(opts.log),
        held: opts.held,
        tls,
        refused: tx,
        check: opts.check,
        strikes: Default::default(),
    });
    let task = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(handle(state, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(conn), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Ok(Proxy {
        port,
        ca_pem,
        refused,
        task,
    })
}

/// The system's CA bundle, where the usual distributions keep it.
pub const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

fn tls(held: &[Held], upstream_ca: &[(String, PathBuf)]) -> Result<Tls, EgressError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, GeneralSubtree, IsCa, KeyPair,
        KeyUsagePurpose, NameConstraints,
    };
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let cert_err = |host: &str, e: rcgen::Error| EgressError::Certificate {
        host: host.to_owned(),
        reason: e.to_string(),
    };
    let mut params = CertificateParams::new(Vec::new()).map_err(|e| cert_err("the CA", e))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, "abo egress proxy (this attempt only)");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // The CA vouches for the held hosts and nothing else, by name. Node's TLS refuses every
    // certificate under a CA constrained by IP address, so a held endpoint named by its address
    // leaves the CA unconstrained: it is made for this attempt, its key never leaves this process,
    // and only the sandboxed agent trusts it.
    if held.iter().all(|h| h.host.parse::<IpAddr>().is_err()) {
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: held
                .iter()
                .map(|h| GeneralSubtree::DnsName(h.host.clone()))
                .collect(),
            excluded_subtrees: Vec::new(),
        });
    }
    let key = KeyPair::generate().map_err(|e| cert_err("the CA", e))?;
    let ca = params
        .self_signed(&key)
        .map_err(|e| cert_err("the CA", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let system = SYSTEM_BUNDLES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if let Some(path) = system
        && let Ok(certs) = CertificateDer::pem_file_iter(&path)
    {
        roots.add_parsable_certificates(certs.flatten());
    }
    for (var, path) in upstream_ca {
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| EgressError::Bundle {
            var: var.clone(),
            path: path.clone(),
            reason: e.to_string(),
        })?;
        roots.add_parsable_certificates(certs.flatten());
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| EgressError::Certificate {
            host: "upstream".into(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Tls {
        ca_der: ca.der().clone(),
        ca_pem: ca.pem(),
        issuer: rcgen::Issuer::new(params, key),
        provider,
        client: tokio_rustls::TlsConnector::from(Arc::new(client)),
    })
}

impl Tls {
    /// A server configuration presenting a certificate for `host`, signed by this proxy's CA.
    fn acceptor(&self, host: &str) -> Result<tokio_rustls::TlsAcceptor, String> {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
        let mut params =
            CertificateParams::new(vec![host.to_owned()]).map_err(|e| e.to_string())?;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let leaf = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| e.to_string())?;
        let der_key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), self.ca_der.clone()], der_key)
            .map_err(|e| e.to_string())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl State {
    fn record(&self, host: &str, port: u16, allowed: bool, reason: String) {
        let r = Record {
            host,
            port,
            allowed,
            reason,
        };
        if let (Ok(path), Ok(line)) = (self.log.lock(), serde_json::to_string(&r)) {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&*path)
            {
                let _ = writeln!(f, "{line}");
            }
        }
    }

    fn refuse(&self, r: Refusal) -> Response<Body> {
        let reason = r.reason();
        self.record(&r.host, r.port, false, reason.clone());
        let status = match r.why {
            Why::NotProxied { .. } => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::FORBIDDEN,
        };
        if r.by_configuration() && self.strike(&r) {
            self.refused.send_if_modified(|first| {
                if first.is_none() {
                    *first = Some(r);
                    true
                } else {
                    false
                }
            });
        }
        let mut resp = text(status, &format!("abo egress proxy: {reason}"));
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }

    /// Whether this refusal stops the agent: at once for what can only be its model traffic (a
    /// local gateway, a provider's API), else when the same host was refused [`STRIKES`] times
    /// within [`STRIKE_WINDOW`] (a retry loop), so that a one-off fetch or telemetry ping to a
    /// host not listed gets its 403 and the agent goes on.
    fn strike(&self, r: &Refusal) -> bool {
        let local_name = r.host == "localhost"
            || r.host.ends_with(".localhost")
            || r.host
                .parse::<IpAddr>()
                .is_ok_and(|ip| matches!(classify(ip), Class::Local(_)));
        let provider = abo_core::config::DEFAULT_AGENT_HOSTS.contains(&r.host.as_str());
        if matches!(r.why, Why::LocalNotNamed { .. }) || local_name || provider {
            return true;
        }
        let now = tokio::time::Instant::now();
        let Ok(mut strikes) = self.strikes.lock() else {
            return true;
        };
        let seen = strikes.entry((r.host.clone(), r.port)).or_default();
        seen.retain(|t| now.duration_since(*t) < STRIKE_WINDOW);
        seen.push(now);
        seen.len() >= STRIKES
    }

    fn held(&self, host: &str, port: u16) -> Option<&Held> {
        self.held
            .iter()
            .find(|h| same_host(&normal_host(&h.host), host) && h.port == port)
    }

    /// Checks `host:port` and resolves it; the addresses returned are the ones to connect to.
    async fn check(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
        let host = normal_host(host);
        let refusal = |why| Refusal {
            host: host.clone(),
            port,
            why,
        };
        // Nothing is resolved for a host that is not listed.
        if !self.list.covers(&host, port) {
            return Err(refusal(
                self.list
                    .judge(&host, port, &[])
                    .err()
                    .unwrap_or(Why::NotListed),
            ));
        }
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match tokio::net::lookup_host((host.as_str(), port)).await {
                Ok(a) => a.collect(),
                Err(e) => {
                    return Err(refusal(Why::Unresolved {
                        error: e.to_string(),
                    }));
                }
            },
        };
        let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
        self.list.judge(&host, port, &ips).map_err(refusal)?;
        Ok(addrs)
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let uri = req.uri().clone();
    let (host, port) = match uri.authority() {
        Some(a) => (
            a.host().to_owned(),
            a.port_u16().unwrap_or(if req.method() == Method::CONNECT {
                443
            } else {
                80
            }),
        ),
        None => (String::new(), 0),
    };
    if host.eq_ignore_ascii_case(crate::check::HOST) && req.method() != Method::CONNECT {
        return check(&state, &req).await;
    }
    let proxied = req.method() == Method::CONNECT || uri.scheme_str() == Some("http");
    if !proxied || host.is_empty() {
        return state.refuse(Refusal {
            host: if host.is_empty() {
                uri.to_string()
            } else {
                host
            },
            port,
            why: Why::NotProxied {
                method: req.method().to_string(),
            },
        });
    }
    let addrs = match state.check(&host, port).await {
        Ok(a) => a,
        Err(r) => return state.refuse(r),
    };
    let host = normal_host(&host);
    if req.method() == Method::CONNECT {
        return connect(state, req, host, port, addrs).await;
    }
    state.record(&host, port, true, "allowed".into());
    let target = Target {
        host,
        port,
        addrs,
        tls: false,
    };
    forward(&state, req, &target).await
}

/// A request for the attempt's `check` tool: answered here, never forwarded. The token is not
/// logged, only whether the request had the right one.
async fn check(state: &State, req: &Request<Incoming>) -> Response<Body> {
    use crate::check::Answer;
    let Some(door) = &state.check else {
        state.record(
            crate::check::HOST,
            80,
            false,
            "no check tool in this attempt".into(),
        );
        return text(StatusCode::NOT_FOUND, "abo: no check tool in this attempt");
    };
    let token = req
        .headers()
        .get(crate::check::TOKEN_HEADER)
        .map(HeaderValue::as_bytes);
    let answer = door
        .answer(req.method().as_str(), req.uri().path(), token)
        .await;
    let (allowed, status, body) = match answer {
        Answer::Refused => (
            false,
            StatusCode::FORBIDDEN,
            "abo: check needs this attempt's token".to_owned(),
        ),
        Answer::NotFound => (
            false,
            StatusCode::NOT_FOUND,
            "abo: POST /check only".to_owned(),
        ),
        Answer::Gone => (
            false,
            StatusCode::SERVICE_UNAVAILABLE,
            "abo: the attempt is over".to_owned(),
        ),
        Answer::Checked(v) => (true, StatusCode::OK, v.to_string()),
    };
    state.record(
        crate::check::HOST,
        80,
        allowed,
        if allowed {
            "check".into()
        } else {
            format!("check refused ({})", status.as_u16())
        },
    );
    let mut r = text(status, &body);
    if allowed {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    r
}

/// `CONNECT`: a tunnel, or for a held key, TLS terminated here.
async fn connect(
    state: Arc<State>,
    req: Request<Incoming>,
    host: String,
    port: u16,
    addrs: Vec<SocketAddr>,
) -> Response<Body> {
    let target = Target {
        host,
        port,
        addrs,
        tls: true,
    };
    if state.held(&target.host, port).is_some_and(|h| h.tls)
        && let Some(tls) = &state.tls
    {
        let acceptor = match tls.acceptor(&target.host) {
            Ok(a) => a,
            Err(e) => {
                state.record(&target.host, port, false, format!("certificate: {e}"));
                return text(StatusCode::BAD_GATEWAY, "abo egress proxy: no certificate");
            }
        };
        state.record(&target.host, port, true, "allowed, key added by abo".into());
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else {
                return;
            };
            let Ok(stream) = acceptor.accept(TokioIo::new(upgraded)).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let (state, target) = (Arc::clone(&state), target.clone());
                async move { Ok::<_, Infallible>(forward(&state, req, &target).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        return established();
    }
    let mut upstream = match TcpStream::connect(&target.addrs[..]).await {
        Ok(s) => s,
        Err(e) => {
            let why = format!("connecting to {}:{port}: {e}", target.host);
            state.record(&target.host, port, false, why);
            return text(
                StatusCode::BAD_GATEWAY,
                "abo egress proxy: upstream unreachable",
            );
        }
    };
    state.record(&target.host, port, true, "allowed".into());
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let mut client = TokioIo::new(upgraded);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    });
    established()
}

/// The answer to an allowed CONNECT.
fn established() -> Response<Body> {
    let mut r = Response::new(BoxBody::default());
    r.extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(
            b"Connection Established",
        ));
    r
}

/// Headers that belong to one connection, not to the request: never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for n in proxy {
        headers.remove(n);
    }
}

/// Sends one request to its target on a connection of its own and streams the response back.
async fn forward(state: &State, mut req: Request<Incoming>, t: &Target) -> Response<Body> {
    strip_hop_by_hop(req.headers_mut());
    let origin = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    match origin.parse() {
        Ok(u) => *req.uri_mut() = u,
        Err(_) => return text(StatusCode::BAD_REQUEST, "abo egress proxy: bad target"),
    }
    *req.version_mut() = Version::HTTP_11;
    let default_port = if t.tls { 443 } else { 80 };
    let host_header = match (t.host.parse::<Ipv6Addr>(), t.port == default_port) {
        (Ok(_), true) => format!("[{}]", t.host),
        (Ok(_), false) => format!("[{}]:{}", t.host, t.port),
        (Err(_), true) => t.host.clone(),
        (Err(_), false) => format!("{}:{}", t.host, t.port),
    };
    if let Ok(v) = HeaderValue::from_str(&host_header) {
        req.headers_mut().insert(header::HOST, v);
    }
    // A key held for an HTTPS endpoint goes only inside TLS: a plain `http://host:443` request
    // gets none (it would put the key on the wire in clear).
    if let Some(h) = state.held(&t.host, t.port).filter(|h| h.tls == t.tls) {
        add_key(req.headers_mut(), h);
    }
    let tcp = match TcpStream::connect(&t.addrs[..]).await {
        Ok(s) => s,
        Err(e) => {
            let why = format!("connecting to {}:{}: {e}", t.host, t.port);
            state.record(&t.host, t.port, false, why);
            return text(
                StatusCode::BAD_GATEWAY,
                "abo egress proxy: upstream unreachable",
            );
        }
    };
    let sent = match (&state.tls, t.tls) {
        (Some(tls), true) => {
            let name = match rustls::pki_types::ServerName::try_from(t.host.clone()) {
                Ok(n) => n,
                Err(_) => return text(StatusCode::BAD_GATEWAY, "abo egress proxy: bad name"),
            };
            match tls.client.connect(name, tcp).await {
                Ok(s) => send(s, req).await,
                Err(e) => {
                    let why = format!("TLS with {}:{}: {e}", t.host, t.port);
                    state.record(&t.host, t.port, false, why);
                    return text(
                        StatusCode::BAD_GATEWAY,
                        "abo egress proxy: upstream TLS failed",
                    );
                }
            }
        }
        _ => send(tcp, req).await,
    };
    match sent {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => {
            let why = format!("{}:{}: {e}", t.host, t.port);
            state.record(&t.host, t.port, false, why);
            text(StatusCode::BAD_GATEWAY, "abo egress proxy: upstream failed")
        }
    }
}

fn add_key(headers: &mut HeaderMap, h: &Held) {
    let (name, value, other) = match h.header {
        AuthHeader::XApiKey => (
            HeaderName::from_static("x-api-key"),
            h.key.clone(),
            header::AUTHORIZATION,
        ),
        AuthHeader::Bearer => (
            header::AUTHORIZATION,
            format!("Bearer {}", h.key),
            HeaderName::from_static("x-api-key"),
        ),
    };
    // The placeholder goes wherever the agent put it; another credential of its own stays.
    if headers
        .get(&other)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(PLACEHOLDER))
    {
        headers.remove(&other);
    }
    if let Ok(mut v) = HeaderValue::from_str(&value) {
        v.set_sensitive(true);
        headers.insert(name, v);
    }
}

async fn send<S>(io: S, req: Request<Incoming>) -> Result<Response<Incoming>, hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    sender.send_request(req).await
}

#[cfg(test)]
mod tests;
