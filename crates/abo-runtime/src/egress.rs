//! The egress proxy of agent CLIs: HTTP CONNECT to the hosts of `sandbox.agent_hosts` only.
//! A name that resolves to a private, link-local or metadata address is refused even when it is
//! allowed (DNS rebinding); loopback only when the allowlist names `localhost` or a loopback
//! address itself (a local model server). Every connection, allowed or refused, is recorded as a
//! JSON line in the attempt's egress log. In the sandbox, Landlock lets the agent open TCP
//! connections to the proxy's port only.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; it stops when dropped.
pub struct Proxy {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Serialize)]
struct Record<'a> {
    host: &'a str,
    port: u16,
    allowed: bool,
    reason: String,
}

/// Starts a proxy on 127.0.0.1 allowing `hosts`, logging to `log`.
pub async fn start(hosts: Vec<String>, log: PathBuf) -> std::io::Result<Proxy> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let hosts = Arc::new(hosts);
    let log = Arc::new(std::sync::Mutex::new(log));
    let task = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let (hosts, log) = (Arc::clone(&hosts), Arc::clone(&log));
            tokio::spawn(async move {
                let _ = serve(conn, &hosts, &log).await;
            });
        }
    });
    Ok(Proxy { port, task })
}

/// Whether the allowlist names `host` (`*.example.com` covers its subdomains).
pub fn allowed(hosts: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    hosts.iter().any(|h| {
        let h = h.to_ascii_lowercase();
        match h.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => h == host,
        }
    })
}

/// Why an address may not be reached, if it may not.
pub fn forbidden(ip: IpAddr, loopback_ok: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            if v == std::net::Ipv4Addr::new(169, 254, 169, 254) {
                Some("a cloud metadata address")
            } else if v.is_link_local() {
                Some("a link-local address")
            } else if v.is_private() || (o[0] == 100 && (64..128).contains(&o[1])) {
                Some("a private address")
            } else if v.is_loopback() && !loopback_ok {
                Some("a loopback address")
            } else if v.is_unspecified() || v.is_broadcast() || v.is_multicast() {
                Some("not a unicast address")
            } else {
                None
            }
        }
        IpAddr::V6(v) => {
            if let Some(m) = v.to_ipv4_mapped() {
                return forbidden(IpAddr::V4(m), loopback_ok);
            }
            let s = v.segments();
            if s[0] == 0xfd00 && s[1] == 0x0ec2 {
                Some("a cloud metadata address")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("a link-local address")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("a private address")
            } else if v.is_loopback() && !loopback_ok {
                Some("a loopback address")
            } else if v.is_unspecified() || v.is_multicast() {
                Some("not a unicast address")
            } else {
                None
            }
        }
    }
}

async fn serve(
    mut conn: TcpStream,
    hosts: &[String],
    log: &std::sync::Mutex<PathBuf>,
) -> std::io::Result<()> {
    // The request head, up to its blank line (8 KiB at most).
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 || head.len() > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let record = |host: &str, port: u16, allowed: bool, reason: String| {
        let r = Record {
            host,
            port,
            allowed,
            reason,
        };
        if let (Ok(path), Ok(line)) = (log.lock(), serde_json::to_string(&r)) {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&*path)
            {
                let _ = writeln!(f, "{line}");
            }
        }
    };
    if method != "CONNECT" {
        record(target, 0, false, format!("{method} is not CONNECT"));
        conn.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nConnection: close\r\n\r\n")
            .await?;
        return Ok(());
    }
    let (host, port) = match target.rsplit_once(':') {
        Some((h, p)) => (h.trim_matches(['[', ']']), p.parse::<u16>().unwrap_or(0)),
        None => (target, 443),
    };
    const FORBIDDEN: &[u8] = b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n";
    if !allowed(hosts, host) {
        let why = format!("{host} is not in sandbox.agent_hosts");
        record(host, port, false, why);
        conn.write_all(FORBIDDEN).await?;
        return Ok(());
    }
    let loopback_ok = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(a) => a.collect(),
        Err(e) => {
            let why = format!("{host} does not resolve: {e}");
            record(host, port, false, why);
            conn.write_all(FORBIDDEN).await?;
            return Ok(());
        }
    };
    if let Some((ip, why)) = addrs
        .iter()
        .find_map(|a| forbidden(a.ip(), loopback_ok).map(|w| (a.ip(), w)))
    {
        let why = format!("{host} resolves to {ip}, {why}");
        record(host, port, false, why);
        conn.write_all(FORBIDDEN).await?;
        return Ok(());
    }
    let mut upstream = match TcpStream::connect(&addrs[..]).await {
        Ok(s) => s,
        Err(e) => {
            let why = format!("connecting to {host}:{port}: {e}");
            record(host, port, false, why.clone());
            conn.write_all(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n")
                .await?;
            return Ok(());
        }
    };
    record(host, port, true, "allowed".into());
    conn.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    tokio::io::copy_bidirectional(&mut conn, &mut upstream).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    async fn only_allowed_hosts_at_public_or_explicitly_local_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("egress.jsonl");
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = upstream.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = upstream.accept().await {
                let _ = c.write_all(b"hello").await;
            }
        });
        let proxy = start(
            vec![
                "localhost".into(),
                "169.254.169.254".into(),
                "*.internal.test".into(),
            ],
            log.clone(),
        )
        .await
        .unwrap();
        // Allowed: a local server the allowlist names as localhost.
        assert_eq!(
            connect_through(proxy.port, &format!("localhost:{up}")).await,
            "HTTP/1.1 200 Connection Established"
        );
        // Not allowlisted.
        assert_eq!(
            connect_through(proxy.port, "example.com:443").await,
            "HTTP/1.1 403 Forbidden"
        );
        // The metadata address is refused even though it is allowlisted.
        assert_eq!(
            connect_through(proxy.port, "169.254.169.254:80").await,
            "HTTP/1.1 403 Forbidden"
        );
        let lines = std::fs::read_to_string(&log).unwrap();
        let recs: Vec<serde_json::Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recs.len(), 3, "{lines}");
        assert_eq!(recs[0]["allowed"], true);
        assert_eq!(
            recs[1]["reason"],
            "example.com is not in sandbox.agent_hosts"
        );
        assert_eq!(
            recs[2]["reason"],
            "169.254.169.254 resolves to 169.254.169.254, a cloud metadata address"
        );
        assert!(allowed(&["*.internal.test".into()], "api.internal.test"));
        assert!(!allowed(
            &["*.internal.test".into()],
            "internal.test.evil.com"
        ));
        assert_eq!(
            forbidden("10.1.2.3".parse().unwrap(), true),
            Some("a private address")
        );
        assert_eq!(
            forbidden("fe80::1".parse().unwrap(), true),
            Some("a link-local address")
        );
        assert_eq!(forbidden("1.1.1.1".parse().unwrap(), false), None);
    }
}
