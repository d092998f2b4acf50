//! A local model server for tests: real HTTP/1.1 on 127.0.0.1, plain or over TLS with a
//! certificate authority made at test time, every request recorded. It knows nothing of any
//! provider: a [`Handler`] (one per wire format, e.g. [`anthropic`]) turns each request into a
//! [`Reply`], a JSON document or a stream of server-sent events.

pub mod anthropic;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use serde_json::Value;

/// A request as received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    /// The body as sent.
    pub raw: String,
    /// The body as JSON (`Null` when it is not).
    pub body: Value,
}

impl Request {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server answers.
#[derive(Clone, Debug)]
pub enum Reply {
    Json {
        status: u16,
        headers: Vec<(String, String)>,
        body: Value,
    },
    /// `200`, `text/event-stream`: each `(event, data)` as `event: E\ndata: JSON\n\n`.
    Events {
        headers: Vec<(String, String)>,
        events: Vec<(String, Value)>,
    },
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self::Json {
            status,
            headers: Vec::new(),
            body,
        }
    }

    pub fn events(events: Vec<(String, Value)>) -> Self {
        Self::Events {
            headers: Vec::new(),
            events,
        }
    }

    pub fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        match &mut self {
            Self::Json { headers, .. } | Self::Events { headers, .. } => {
                headers.push((k.to_owned(), v.into()));
            }
        }
        self
    }

    fn into_response(self) -> hyper::Response<Body> {
        let (status, headers, content_type, body) = match self {
            Self::Json {
                status,
                headers,
                body,
            } => (status, headers, "application/json", body.to_string()),
            Self::Events { headers, events } => {
                let text: String = events
                    .iter()
                    .map(|(e, d)| format!("event: {e}\ndata: {d}\n\n"))
                    .collect();
                (200, headers, "text/event-stream", text)
            }
        };
        let mut r = hyper::Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("cache-control", "no-cache");
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.body(Body::from(body)).unwrap()
    }
}

/// Turns each request into a reply; a wire format's conversation lives in one.
pub trait Handler: Send + Sync + 'static {
    fn reply(&self, req: &Request) -> Reply;
}

impl<F: Fn(&Request) -> Reply + Send + Sync + 'static> Handler for F {
    fn reply(&self, req: &Request) -> Reply {
        self(req)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    /// TLS with a certificate for `127.0.0.1` and `localhost`, issued by a CA made for this
    /// server alone ([`ModelServer::ca_file`]: give it to Node as `NODE_EXTRA_CA_CERTS`).
    Https,
}

/// A certificate authority made at test time, and the server certificate it issued.
struct TestCa {
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    config: Arc<rustls::ServerConfig>,
}

fn test_ca() -> TestCa {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "abo test CA (made at test time)");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &ca).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone(), ca.der().clone()], key_der)
    .unwrap();
    TestCa {
        _dir: dir,
        ca_file,
        config: Arc::new(config),
    }
}

/// A server on an ephemeral port of 127.0.0.1, in its own thread and runtime. Dropped or
/// [stopped](ModelServer::stop), its port refuses connections.
pub struct ModelServer {
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub url: String,
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    ca: Option<TestCa>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ModelServer {
    pub fn start(scheme: Scheme, handler: impl Handler) -> Self {
        let ca = (scheme == Scheme::Https).then(test_ca);
        let tls = ca
            .as_ref()
            .map(|c| tokio_rustls::TlsAcceptor::from(c.config.clone()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handler: Arc<dyn Handler> = Arc::new(handler);
        let log = requests.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let accept = async {
                    while let Ok((tcp, _)) = listener.accept().await {
                        let (handler, log, tls) = (handler.clone(), log.clone(), tls.clone());
                        tokio::spawn(async move {
                            match tls {
                                Some(tls) => {
                                    if let Ok(s) = tls.accept(tcp).await {
                                        serve(s, handler, log).await;
                                    }
                                }
                                None => serve(tcp, handler, log).await,
                            }
                        });
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stopped => {}
                }
            });
        });
        let scheme = match scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        Self {
            url: format!("{scheme}://127.0.0.1:{port}"),
            port,
            requests,
            ca,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The test CA's certificate (PEM), for `NODE_EXTRA_CA_CERTS`; `None` over plain HTTP.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca.as_ref().map(|c| c.ca_file.as_path())
    }

    /// Stops the server: from now on its port refuses connections.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A URL where no server listens (a port bound, then released): connections are refused.
pub fn refused_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

async fn serve<S>(stream: S, handler: Arc<dyn Handler>, log: Arc<Mutex<Vec<Request>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (handler, log) = (handler.clone(), log.clone());
        async move {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(Body::new(body), usize::MAX)
                .await
                .unwrap_or_default();
            let request = Request {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().map(str::to_owned),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                    .collect(),
                raw: String::from_utf8_lossy(&bytes).into_owned(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let reply = handler.reply(&request);
            log.lock().unwrap().push(request);
            Ok::<_, Infallible>(reply.into_response())
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
        .await;
}
