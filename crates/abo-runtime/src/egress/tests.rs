use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::*;

fn list(hosts: &[&str]) -> Allowlist {
    Allowlist::new(&hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())
}

/// What the proxy says to `host:port` resolving to `addrs` under `hosts`.
fn check(hosts: &[&str], host: &str, port: u16, addrs: &[&str], expect: &str) {
    let addrs: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    let got = match list(hosts).judge(host, port, &addrs) {
        Ok(()) => "allowed".to_owned(),
        Err(why) => {
            let r = Refusal {
                host: host.to_owned(),
                port,
                why,
            };
            format!(
                "{}{}",
                if r.by_configuration() {
                    "config: "
                } else {
                    "never: "
                },
                r.reason()
            )
        }
    };
    assert_eq!(got, expect, "{hosts:?} {host}:{port} at {addrs:?}");
}

#[test]
fn which_hosts_and_addresses_may_be_reached() {
    let provider = ["api.anthropic.com", "api.openai.com"];
    // Listed public hosts; an unlisted one is a configuration error.
    check(
        &provider,
        "api.openai.com",
        443,
        &["162.159.140.245"],
        "allowed",
    );
    check(
        &provider,
        "API.OpenAI.com.",
        443,
        &["162.159.140.245"],
        "allowed",
    );
    check(
        &provider,
        "example.com",
        443,
        &["93.184.215.14"],
        "config: example.com:443 is not in sandbox.agent_hosts",
    );
    // Wildcards cover subdomains only.
    check(
        &["*.internal.test"],
        "api.internal.test",
        443,
        &["8.8.8.8"],
        "allowed",
    );
    check(
        &["*.internal.test"],
        "internal.test.evil.com",
        443,
        &["8.8.8.8"],
        "config: internal.test.evil.com:443 is not in sandbox.agent_hosts",
    );
    // With a port, only that port.
    let local = ["127.0.0.1:4000", "gateway.lan", "localhost:11434"];
    check(&local, "127.0.0.1", 4000, &["127.0.0.1"], "allowed");
    check(
        &local,
        "127.0.0.1",
        4001,
        &["127.0.0.1"],
        "config: 127.0.0.1:4001 is not in sandbox.agent_hosts",
    );
    check(&local, "localhost", 11434, &["127.0.0.1", "::1"], "allowed");
    check(
        &local,
        "localhost",
        22,
        &["127.0.0.1"],
        "config: localhost:22 is not in sandbox.agent_hosts",
    );
    // A private endpoint named by the user.
    check(&local, "gateway.lan", 8080, &["192.168.1.5"], "allowed");
    // DNS rebinding: a name that resolves to loopback or a private address without being named.
    check(
        &["*.lan"],
        "gateway.lan",
        80,
        &["192.168.1.5"],
        "config: gateway.lan resolves to 192.168.1.5, a private address, and sandbox.agent_hosts does not name gateway.lan itself",
    );
    check(
        &provider,
        "api.openai.com",
        443,
        &["127.0.0.1"],
        "config: api.openai.com resolves to 127.0.0.1, a loopback address, and sandbox.agent_hosts does not name api.openai.com itself",
    );
    check(
        &provider,
        "api.anthropic.com",
        443,
        &["162.159.140.245", "10.0.0.3"],
        "config: api.anthropic.com resolves to 10.0.0.3, a private address, and sandbox.agent_hosts does not name api.anthropic.com itself",
    );
    // ... unless the address itself is listed.
    check(
        &["*.lan", "192.168.1.5"],
        "gateway.lan",
        80,
        &["192.168.1.5"],
        "allowed",
    );
    // Metadata and link-local: never, whatever is listed.
    let everything = [
        "169.254.169.254",
        "*.internal",
        "metadata.google.internal",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
        "100.100.100.200",
        "gateway.lan",
    ];
    check(
        &everything,
        "169.254.169.254",
        80,
        &["169.254.169.254"],
        "never: 169.254.169.254 resolves to 169.254.169.254, a cloud metadata address",
    );
    check(
        &everything,
        "metadata.google.internal",
        80,
        &["169.254.169.254"],
        "never: metadata.google.internal is a cloud metadata name",
    );
    check(
        &everything,
        "fe80::1",
        80,
        &["fe80::1"],
        "never: fe80::1 resolves to fe80::1, a link-local address",
    );
    check(
        &everything,
        "fd00:ec2::254",
        80,
        &["fd00:ec2::254"],
        "never: fd00:ec2::254 resolves to fd00:ec2::254, a cloud metadata address",
    );
    check(
        &everything,
        "::ffff:169.254.169.254",
        80,
        &["::ffff:169.254.169.254"],
        "never: ::ffff:169.254.169.254 resolves to ::ffff:169.254.169.254, a cloud metadata address",
    );
    check(
        &everything,
        "100.100.100.200",
        80,
        &["100.100.100.200"],
        "never: 100.100.100.200 resolves to 100.100.100.200, a cloud metadata address",
    );
    // A listed name pointed at the metadata address (or a link-local one).
    check(
        &everything,
        "gateway.lan",
        80,
        &["169.254.10.1"],
        "never: gateway.lan resolves to 169.254.10.1, a link-local address",
    );
    // Addresses embedded in IPv6 count as their IPv4: NAT64 and 6to4 of the metadata address,
    // a v4-mapped loopback under a wildcard.
    assert_eq!(
        classify("64:ff9b::a9fe:a9fe".parse().unwrap()),
        Class::Never("a cloud metadata address")
    );
    assert_eq!(
        classify("2002:a9fe:a9fe::1".parse().unwrap()),
        Class::Never("a cloud metadata address")
    );
    assert_eq!(
        classify("::ffff:127.0.0.1".parse().unwrap()),
        Class::Local("a loopback address")
    );
    assert_eq!(
        classify("0.0.0.0".parse().unwrap()),
        Class::Never("not a unicast address")
    );
    // Control: the same addresses without the embedding are what they are.
    assert_eq!(classify("8.8.8.8".parse().unwrap()), Class::Public);
    assert_eq!(classify("2606:4700::1".parse().unwrap()), Class::Public);
}

/// A plain-HTTP server on 127.0.0.1 that records each request (head and body) and answers it
/// with a chunked, event-stream body sent in three parts.
struct Upstream {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn read_request<S: tokio::io::AsyncRead + Unpin>(r: &mut BufReader<S>) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if let Some(n) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|n| n.trim().parse::<usize>().ok())
    {
        body.resize(n, 0);
        r.read_exact(&mut body).await.ok()?;
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).await.ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Some(format!("{head}{}", String::from_utf8_lossy(&body)))
}

async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: S,
    seen: Arc<Mutex<Vec<String>>>,
) {
    let mut r = BufReader::new(stream);
    while let Some(req) = read_request(&mut r).await {
        seen.lock().unwrap().push(req);
        let w = r.get_mut();
        let _ = w
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            .await;
        for part in ["data: one\n\n", "data: two\n\n", "data: [DONE]\n\n"] {
            let _ = w
                .write_all(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes())
                .await;
            let _ = w.flush().await;
        }
        let _ = w.write_all(b"0\r\n\r\n").await;
        let _ = w.flush().await;
    }
}

async fn upstream() -> Upstream {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            tokio::spawn(answer(c, Arc::clone(&s)));
        }
    });
    Upstream { port, seen }
}

async fn proxy(
    hosts: &[String],
    held: Vec<Held>,
    ca: Vec<(String, PathBuf)>,
) -> (Proxy, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("egress.jsonl");
    let p = start(Options {
        hosts: hosts.to_vec(),
        log: log.clone(),
        held,
        upstream_ca: ca,
        check: None,
    })
    .await
    .unwrap();
    (p, log, dir)
}

/// Reads one response (head and de-chunked body) from `r`.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(r: &mut BufReader<S>) -> (String, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).await.unwrap() > 0,
            "closed after {head}"
        );
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if lower.contains("transfer-encoding: chunked") {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).await.unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|n| n.trim().parse::<usize>().ok())
    {
        body.resize(n, 0);
        r.read_exact(&mut body).await.unwrap();
    }
    (head, String::from_utf8_lossy(&body).into_owned())
}

fn first_line(head: &str) -> &str {
    head.lines().next().unwrap_or_default()
}

#[tokio::test]
async fn plain_http_requests_are_forwarded_to_listed_hosts_with_their_bodies_streamed() {
    let up = upstream().await;
    let (p, log, _dir) = proxy(&[format!("127.0.0.1:{}", up.port)], Vec::new(), Vec::new()).await;
    let conn = TcpStream::connect(("127.0.0.1", p.port)).await.unwrap();
    let mut r = BufReader::new(conn);
    // Two requests on one connection: a POST with a length, then a chunked one.
    let body = r#"{"model":"m","stream":true}"#;
    let req = format!(
        "POST http://127.0.0.1:{}/v1/messages?beta=true HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nProxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\nx-api-key: agent-key\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        up.port,
        up.port,
        body.len()
    );
    r.get_mut().write_all(req.as_bytes()).await.unwrap();
    let (head, got) = read_response(&mut r).await;
    assert_eq!(first_line(&head), "HTTP/1.1 200 OK", "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    assert_eq!(got, "data: one\n\ndata: two\n\ndata: [DONE]\n\n");
    let req = format!(
        "PUT http://127.0.0.1:{}/second HTTP/1.1\r\nHost: 127.0.0.1:{}\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        up.port, up.port
    );
    r.get_mut().write_all(req.as_bytes()).await.unwrap();
    let (head, got) = read_response(&mut r).await;
    assert_eq!(first_line(&head), "HTTP/1.1 200 OK", "{head}");
    assert!(got.ends_with("[DONE]\n\n"));

    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let first = seen[0].to_ascii_lowercase();
    assert!(
        first.starts_with("post /v1/messages?beta=true http/1.1\r\n"),
        "{first}"
    );
    assert!(
        first.contains(&format!("host: 127.0.0.1:{}", up.port)),
        "{first}"
    );
    assert!(first.contains("x-api-key: agent-key"), "{first}");
    assert!(first.ends_with(body), "{first}");
    // Hop-by-hop and proxy headers stay at the proxy, the one Connection names too.
    for h in [
        "proxy-authorization",
        "proxy-connection",
        "connection:",
        "x-hop",
    ] {
        assert!(!first.contains(h), "{h} forwarded: {first}");
    }
    assert!(
        seen[1].starts_with("PUT /second HTTP/1.1\r\n"),
        "{}",
        seen[1]
    );
    assert!(seen[1].ends_with("hello world"), "{}", seen[1]);

    // Control: another port of the same address is not listed; nothing reaches it.
    let other = upstream().await;
    let mut r = BufReader::new(TcpStream::connect(("127.0.0.1", p.port)).await.unwrap());
    let req = format!(
        "GET http://127.0.0.1:{}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        other.port
    );
    r.get_mut().write_all(req.as_bytes()).await.unwrap();
    let (head, got) = read_response(&mut r).await;
    assert_eq!(first_line(&head), "HTTP/1.1 403 Forbidden", "{head}");
    assert!(got.contains("is not in sandbox.agent_hosts"), "{got}");
    assert!(other.seen.lock().unwrap().is_empty());
    // An origin-form request is not a proxy request.
    let mut r = BufReader::new(TcpStream::connect(("127.0.0.1", p.port)).await.unwrap());
    r.get_mut()
        .write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut r).await;
    assert_eq!(
        first_line(&head),
        "HTTP/1.1 405 Method Not Allowed",
        "{head}"
    );
    // The refusal of an unlisted host is the one a configuration change would fix.
    let refused = p.refused.borrow().clone().unwrap();
    assert_eq!(refused.port, other.port);
    assert!(refused.by_configuration());
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(lines.lines().count(), 4, "{lines}");
}

async fn connect_through(port: u16, target: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn connect_only_to_listed_hosts_at_public_or_explicitly_local_addresses() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = upstream.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = upstream.accept().await {
            let _ = c.write_all(b"hello").await;
        }
    });
    let hosts: Vec<String> = ["localhost", "169.254.169.254", "*.internal.test"]
        .map(String::from)
        .to_vec();
    let (p, log, _dir) = proxy(&hosts, Vec::new(), Vec::new()).await;
    // Allowed: a local server the allowlist names as localhost.
    assert_eq!(
        connect_through(p.port, &format!("localhost:{up}")).await,
        "HTTP/1.1 200 Connection Established"
    );
    // A tunnel carries bytes both ways.
    let mut r = BufReader::new(TcpStream::connect(("127.0.0.1", p.port)).await.unwrap());
    r.get_mut()
        .write_all(format!("CONNECT localhost:{up} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (head, _) = read_response(&mut r).await;
    assert_eq!(first_line(&head), "HTTP/1.1 200 Connection Established");
    let mut hello = [0u8; 5];
    r.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello");
    // 127.0.0.1 is not listed (localhost is).
    assert_eq!(
        connect_through(p.port, &format!("127.0.0.1:{up}")).await,
        "HTTP/1.1 403 Forbidden"
    );
    // Not listed.
    assert_eq!(
        connect_through(p.port, "example.com:443").await,
        "HTTP/1.1 403 Forbidden"
    );
    // The metadata address is refused even though it is listed, and so is its v4-mapped form.
    assert_eq!(
        connect_through(p.port, "169.254.169.254:80").await,
        "HTTP/1.1 403 Forbidden"
    );
    assert_eq!(
        connect_through(p.port, "[::ffff:169.254.169.254]:80").await,
        "HTTP/1.1 403 Forbidden"
    );
    let recs: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reasons: Vec<&str> = recs.iter().map(|r| r["reason"].as_str().unwrap()).collect();
    assert_eq!(
        reasons,
        [
            "allowed".to_owned(),
            "allowed".to_owned(),
            format!("127.0.0.1:{up} is not in sandbox.agent_hosts"),
            "example.com:443 is not in sandbox.agent_hosts".to_owned(),
            "169.254.169.254 resolves to 169.254.169.254, a cloud metadata address".to_owned(),
            "::ffff:169.254.169.254:80 is not in sandbox.agent_hosts".to_owned(),
        ]
    );
    // The first refusal a configuration change would fix is sent; metadata never would.
    assert_eq!(
        p.refused.borrow().as_ref().map(Refusal::reason),
        Some(format!("127.0.0.1:{up} is not in sandbox.agent_hosts"))
    );
}

#[tokio::test]
async fn a_host_not_listed_stops_the_agent_when_it_is_retried_a_gateway_at_once() {
    let (p, _log, _dir) = proxy(&["api.anthropic.com".into()], Vec::new(), Vec::new()).await;
    // A one-off fetch of a page: refused, the agent goes on.
    for _ in 1..STRIKES {
        assert_eq!(
            connect_through(p.port, "docs.example.com:443").await,
            "HTTP/1.1 403 Forbidden"
        );
    }
    assert_eq!(*p.refused.borrow(), None);
    // Retried: a loop the agent will not leave by itself.
    connect_through(p.port, "docs.example.com:443").await;
    assert_eq!(
        p.refused.borrow().as_ref().map(Refusal::reason).as_deref(),
        Some("docs.example.com:443 is not in sandbox.agent_hosts")
    );
    // A local gateway not listed: at once.
    let (q, _log, _dir) = proxy(&["api.anthropic.com".into()], Vec::new(), Vec::new()).await;
    connect_through(q.port, "localhost:4000").await;
    assert_eq!(
        q.refused.borrow().as_ref().map(Refusal::reason).as_deref(),
        Some("localhost:4000 is not in sandbox.agent_hosts")
    );
}

#[tokio::test]
async fn a_metadata_refusal_is_no_configuration_error() {
    let (p, _log, _dir) = proxy(&["169.254.169.254".into()], Vec::new(), Vec::new()).await;
    assert_eq!(
        connect_through(p.port, "169.254.169.254:80").await,
        "HTTP/1.1 403 Forbidden"
    );
    assert_eq!(*p.refused.borrow(), None);
}

const KEY: &str = "sk-ant-real-key-0123456789abcdef";

fn held(port: u16, header: AuthHeader, host: &str, tls: bool) -> Vec<Held> {
    vec![Held {
        host: host.into(),
        port,
        tls,
        header,
        key: KEY.into(),
    }]
}

#[tokio::test]
async fn over_plain_http_the_proxy_adds_the_key_the_agent_does_not_hold() {
    let up = upstream().await;
    let hosts = [format!("127.0.0.1:{}", up.port)];
    let send = |port: u16, auth: &'static str| async move {
        let mut r = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        let req = format!(
            "POST http://127.0.0.1:{}/v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}content-length: 2\r\n\r\n{{}}",
            up.port
        );
        r.get_mut().write_all(req.as_bytes()).await.unwrap();
        let (head, _) = read_response(&mut r).await;
        assert_eq!(first_line(&head), "HTTP/1.1 200 OK", "{head}");
    };
    // The attack on the key: the agent has none, only the placeholder.
    let (p, _log, _dir) = proxy(
        &hosts,
        held(up.port, AuthHeader::Bearer, "127.0.0.1", false),
        Vec::new(),
    )
    .await;
    // A plain-HTTP endpoint needs no CA: the agent's trust is left as it was.
    assert_eq!(p.ca_pem, None);
    send(p.port, "Authorization: Bearer abo-proxy-held\r\n").await;
    send(p.port, "").await;
    // Control: without a held key, what the agent sends is what arrives.
    let (q, _log, _dir2) = proxy(&hosts, Vec::new(), Vec::new()).await;
    send(q.port, "Authorization: Bearer abo-proxy-held\r\n").await;
    let seen: Vec<String> = up
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let auth = |s: &str| {
        s.lines()
            .filter(|l| l.starts_with("authorization:"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        auth(&seen[0]),
        [format!(
            "authorization: bearer {}",
            KEY.to_ascii_lowercase()
        )]
    );
    assert_eq!(
        auth(&seen[1]),
        [format!(
            "authorization: bearer {}",
            KEY.to_ascii_lowercase()
        )]
    );
    assert_eq!(auth(&seen[2]), ["authorization: bearer abo-proxy-held"]);
}

#[tokio::test]
async fn a_key_held_for_https_never_goes_out_over_plain_http() {
    // The endpoint is HTTPS (the key is added inside TLS); the agent sends a plain request to the
    // same host and port, where a plain listener waits.
    let up = upstream().await;
    let hosts = [format!("127.0.0.1:{}", up.port)];
    let send = |port: u16| async move {
        let mut r = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        let req = format!(
            "POST http://127.0.0.1:{}/v1/messages HTTP/1.1\r\nHost: x\r\ncontent-length: 2\r\n\r\n{{}}",
            up.port
        );
        r.get_mut().write_all(req.as_bytes()).await.unwrap();
        let _ = read_response(&mut r).await;
    };
    let (p, _log, _dir) = proxy(
        &hosts,
        held(up.port, AuthHeader::XApiKey, "127.0.0.1", true),
        Vec::new(),
    )
    .await;
    send(p.port).await;
    // Control: held for a plain-HTTP endpoint, the same request carries it.
    let (q, _log, _dir2) = proxy(
        &hosts,
        held(up.port, AuthHeader::XApiKey, "127.0.0.1", false),
        Vec::new(),
    )
    .await;
    send(q.port).await;
    let seen: Vec<String> = up
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    assert!(!seen[0].contains(&KEY.to_ascii_lowercase()), "{}", seen[0]);
    assert!(
        seen[1].contains(&format!("x-api-key: {}", KEY.to_ascii_lowercase())),
        "{}",
        seen[1]
    );
}

/// A CA of the test's own, and a TLS server for `localhost` on 127.0.0.1 that it signed.
fn test_ca(dir: &std::path::Path) -> (PathBuf, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let ca = params.self_signed(&key).unwrap();
    let issuer = rcgen::Issuer::new(params, key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let path = dir.join("upstream-ca.pem");
    std::fs::write(&path, ca.pem()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    (path, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Through the proxy at `proxy`, CONNECT to `localhost:port`, TLS trusting `ca_pem`, one request.
async fn https_through(proxy: u16, port: u16, ca_pem: &str, auth: &str) -> Result<String, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut s = TcpStream::connect(("127.0.0.1", proxy)).await.unwrap();
    s.write_all(
        format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut r = BufReader::new(s);
    let (head, _) = read_response(&mut r).await;
    if first_line(&head) != "HTTP/1.1 200 Connection Established" {
        return Err(head);
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            r.into_inner(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(tls);
    let req = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: localhost:{port}\r\n{auth}content-length: 2\r\n\r\n{{}}"
    );
    r.get_mut().write_all(req.as_bytes()).await.unwrap();
    let (head, body) = read_response(&mut r).await;
    Ok(format!("{}\n{body}", first_line(&head)))
}

#[tokio::test]
async fn over_https_the_proxy_terminates_tls_adds_the_key_and_verifies_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream_ca, acceptor) = test_ca(dir.path());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            let (acceptor, s) = (acceptor.clone(), Arc::clone(&s));
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(c).await {
                    answer(tls, s).await;
                }
            });
        }
    });
    let hosts = [format!("localhost:{port}")];
    let ca = vec![("SSL_CERT_FILE".to_owned(), upstream_ca)];
    let (p, log, _d) = proxy(
        &hosts,
        held(port, AuthHeader::XApiKey, "localhost", true),
        ca.clone(),
    )
    .await;
    let ca_pem = p.ca_pem.clone().unwrap();
    assert!(!ca_pem.contains("PRIVATE"), "{ca_pem}");
    let got = https_through(p.port, port, &ca_pem, "x-api-key: abo-proxy-held\r\n")
        .await
        .unwrap();
    assert_eq!(
        got,
        "HTTP/1.1 200 OK\ndata: one\n\ndata: two\n\ndata: [DONE]\n\n"
    );
    let first = seen.lock().unwrap()[0].to_ascii_lowercase();
    assert!(first.starts_with("post /v1/messages http/1.1"), "{first}");
    assert!(
        first.contains(&format!("x-api-key: {}", KEY.to_ascii_lowercase())),
        "{first}"
    );
    assert!(!first.contains("abo-proxy-held"), "{first}");
    // The key is in no log line.
    assert!(!std::fs::read_to_string(&log).unwrap().contains(KEY));
    // A client that does not trust the proxy's CA gets no plaintext to it.
    let (_, _) = test_ca(dir.path());
    let other = std::fs::read_to_string(dir.path().join("upstream-ca.pem")).unwrap();
    assert!(https_through(p.port, port, &other, "").await.is_err());
    // Control for upstream verification: without the upstream's CA, the proxy refuses to talk
    // to it (502), so the key is never sent to a server it cannot verify.
    let (q, _log, _d2) = proxy(
        &hosts,
        held(port, AuthHeader::XApiKey, "localhost", true),
        Vec::new(),
    )
    .await;
    let got = https_through(q.port, port, q.ca_pem.as_deref().unwrap(), "")
        .await
        .unwrap();
    assert!(got.starts_with("HTTP/1.1 502"), "{got}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}
