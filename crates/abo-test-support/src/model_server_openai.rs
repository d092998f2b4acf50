//! A scripted OpenAI-compatible model server on 127.0.0.1 for the real agent CLIs: the Responses
//! API streamed as server-sent events (what Codex speaks with `wire_api = "responses"`) and Chat
//! Completions, streamed or not (what aider speaks through litellm). Over `http://`, or over
//! `https://localhost` with a certificate of a CA made when the server starts (its PEM file is
//! [`ModelServer::ca_file`]).
//!
//! The conversation is scripted and stateless: each request is answered from what its input
//! already holds. For the Responses API: first a patch that creates [`CREATED`], edits
//! `edit.txt` and deletes `doomed.txt` (through the `apply_patch` tool the request offers, as a
//! freeform `custom` tool or a `function`, else through its shell tool), then [`COMMAND`] through
//! the shell tool (`exec_command` or `shell`), then a final message quoting what the command's
//! output was as the CLI sent it back. For Chat Completions: one reply with the create and the
//! edit in the edit format the system prompt asks for (aider's SEARCH/REPLACE blocks, or whole
//! files). A repository for the script holds [`SEED`].
//!
//! It fails on demand ([`Failure`]): 429 with `retry-after` and `x-ratelimit-reset-*`, or the
//! account's usage limit; [`down_url`] is a URL where nothing listens. Every request is recorded,
//! and so is the usage of every successful reply ([`ModelServer::served`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The files a repository holds for the script to edit and delete.
pub const SEED: [(&str, &str); 2] = [("edit.txt", "hello\n"), ("doomed.txt", "bye\n")];
/// The file the script creates, and its content.
pub const CREATED: (&str, &str) = ("created.txt", "made by the model\n");
/// `edit.txt` after the script's edit.
pub const EDITED: &str = "hello, edited\n";
/// The command the script runs (Responses API only): it writes `ran.txt` and prints it.
pub const COMMAND: &str = "printf 'answer %s\\n' $((6*7)) > ran.txt && cat ran.txt";
/// What [`COMMAND`] prints, and so what the final message quotes when the command ran.
pub const COMMAND_OUTPUT: &str = "answer 42";
/// The final message starts with this; the command's output as the CLI returned it follows.
pub const FINAL: &str = "Done: created, edited and deleted; the command printed:";

/// How the server answers model requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// As scripted.
    None,
    /// 429 `rate_limit_exceeded`, with `retry-after: 1` and `x-ratelimit-reset-*`.
    RateLimited,
    /// 429 `insufficient_quota`: the account's usage limit is reached.
    UsageLimit,
}

/// What the model does on the Responses API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    /// The scripted change: a patch, a command, a final message.
    Change,
    /// Asks the user: a `request_user_input` call offering [`ASK_OPTIONS`], then, whatever the
    /// CLI answered, a final reply that asks [`ASKED`].
    Ask,
}

/// The question of [`Script::Ask`], and its options.
pub const ASK_QUESTION: &str = "Which roles first?";
pub const ASK_OPTIONS: [&str; 2] = ["Admin", "Viewer"];
/// [`Script::Ask`]'s final reply.
pub const ASKED: &str = "I need to know which roles come first: Admin or Viewer?";

/// A request as received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
}

/// The usage of every successful reply, added up, in the API's own terms (`input` includes
/// `cached`; `output` includes `reasoning`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Served {
    pub replies: u64,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
}

#[derive(Debug)]
struct Inner {
    failure: Failure,
    script: Script,
    requests: Vec<Seen>,
    served: Served,
}

type Shared = Arc<Mutex<Inner>>;

pub struct ModelServer {
    pub port: u16,
    /// `http://127.0.0.1:PORT/v1`, or `https://localhost:PORT/v1`.
    pub base_url: String,
    /// The test CA's certificate (PEM), for `https`.
    pub ca_file: Option<PathBuf>,
    shared: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl ModelServer {
    /// Serves `http://127.0.0.1:0`.
    pub fn http() -> Self {
        Self::start(false)
    }

    /// Serves `https://localhost` with a certificate signed by a CA made now.
    pub fn https() -> Self {
        Self::start(true)
    }

    fn start(tls: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (acceptor, ca_file) = if tls {
            let (config, ca_pem) = tls_config();
            let ca_file = dir.path().join("test-ca.pem");
            std::fs::write(&ca_file, ca_pem).unwrap();
            (
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
                Some(ca_file),
            )
        } else {
            (None, None)
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared: Shared = Arc::new(Mutex::new(Inner {
            failure: Failure::None,
            script: Script::Change,
            requests: Vec::new(),
            served: Served::default(),
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let serve = async {
                    loop {
                        let Ok((stream, peer)) = listener.accept().await else {
                            continue;
                        };
                        let s = s.clone();
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            match acceptor {
                                Some(a) => {
                                    if let Ok(tls) = a.accept(stream).await {
                                        connection(tls, peer, s).await;
                                    }
                                }
                                None => connection(stream, peer, s).await,
                            }
                        });
                    }
                };
                tokio::select! {
                    () = serve => {}
                    _ = stopped => {}
                }
            });
        });
        let base_url = if tls {
            format!("https://localhost:{port}/v1")
        } else {
            format!("http://127.0.0.1:{port}/v1")
        };
        Self {
            port,
            base_url,
            ca_file,
            shared,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// From now on, model requests are answered with this.
    pub fn fail(&self, failure: Failure) {
        self.shared.lock().unwrap().failure = failure;
    }

    /// What the model does from now on (the Responses API).
    pub fn script(&self, script: Script) {
        self.shared.lock().unwrap().script = script;
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.shared.lock().unwrap().requests.clone()
    }

    /// The model requests (POSTs) received.
    pub fn model_requests(&self) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect()
    }

    pub fn served(&self) -> Served {
        self.shared.lock().unwrap().served
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A base URL on 127.0.0.1 where nothing listens: connections are refused. Port 1 (tcpmux), not
/// a port bound and let go: the kernel hands that one to the next test that binds port 0 (an
/// egress proxy of a test beside this one answered a "down" provider's request), while port 1 is
/// outside the ephemeral range and privileged. Checked, so that a machine where something does
/// listen there says so.
pub fn down_url() -> String {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
    assert!(
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)).is_err(),
        "something listens on {addr}: the tests need a port where connections are refused"
    );
    format!("http://{addr}/v1")
}

/// A CA made now, and a server configuration whose certificate it signed for `localhost` and
/// `127.0.0.1`; the CA's certificate as PEM.
fn tls_config() -> (rustls::ServerConfig, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "abo test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let chain = vec![cert.der().clone()];
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key_der)
    .unwrap();
    (config, ca_cert.pem())
}

/// One connection: one request, one response, then it closes (the response's end is the
/// connection's, which streams need no framing for).
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, _peer: SocketAddr, s: Shared) {
    let Some(req) = read_request(&mut io).await else {
        return;
    };
    let (failure, script) = {
        let mut inner = s.lock().unwrap();
        inner.requests.push(req.clone());
        (inner.failure, inner.script)
    };
    let path = req.path.split('?').next().unwrap_or("").to_owned();
    let reply = match (req.method.as_str(), path.as_str()) {
        ("POST", p) if p.ends_with("/responses") || p.ends_with("/chat/completions") => {
            match failure {
                Failure::None if p.ends_with("/responses") => responses(&req.body, script),
                Failure::None => chat(&req.body),
                Failure::RateLimited => Reply::json(
                    429,
                    &[
                        ("retry-after", "1"),
                        ("x-ratelimit-limit-requests", "3"),
                        ("x-ratelimit-remaining-requests", "0"),
                        ("x-ratelimit-reset-requests", "1s"),
                        ("x-ratelimit-reset-tokens", "1s"),
                    ],
                    json!({"error": {
                        "message": "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 1s.",
                        "type": "requests",
                        "param": null,
                        "code": "rate_limit_exceeded"
                    }}),
                ),
                Failure::UsageLimit => Reply::json(
                    429,
                    &[],
                    json!({"error": {
                        "message": "You exceeded your current quota, please check your plan and billing details.",
                        "type": "insufficient_quota",
                        "param": null,
                        "code": "insufficient_quota"
                    }}),
                ),
            }
        }
        ("GET", p) if p.ends_with("/models") => Reply::json(
            200,
            &[],
            json!({"object": "list", "data": [{"id": "gpt-5.5", "object": "model", "owned_by": "abo-test"}]}),
        ),
        _ => Reply::json(404, &[], json!({"error": {"message": "not found"}})),
    };
    if reply.status == 200
        && let Some(u) = reply.usage
    {
        let mut inner = s.lock().unwrap();
        let t = &mut inner.served;
        t.replies += 1;
        t.input_tokens += u.input_tokens;
        t.cached_tokens += u.cached_tokens;
        t.output_tokens += u.output_tokens;
        t.reasoning_tokens += u.reasoning_tokens;
    }
    let _ = write_reply(&mut io, &reply).await;
}

async fn read_request<S: AsyncRead + Unpin>(io: &mut S) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = io.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    // An absolute-form target (through a forwarding proxy) is reduced to its path.
    let path = match target.split_once("://") {
        Some((_, rest)) => rest
            .find('/')
            .map_or_else(|| "/".to_owned(), |i| rest[i..].to_owned()),
        None => target,
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut body = buf[head_end + 4..].to_vec();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        while !chunked_complete(&body) {
            let n = io.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body = dechunk(&body);
    } else {
        let len: usize = get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while body.len() < len {
            let n = io.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(len);
    }
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Some(Seen {
        method,
        path,
        headers,
        body,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn chunked_complete(b: &[u8]) -> bool {
    b.ends_with(b"0\r\n\r\n")
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = find(b, b"\r\n") {
        let size = String::from_utf8_lossy(&b[..i]);
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < i + 2 + size {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + size]);
        b = &b[(i + 4 + size).min(b.len())..];
    }
    out
}

#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    input_tokens: u64,
    cached_tokens: u64,
    output_tokens: u64,
    reasoning_tokens: u64,
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    /// A JSON body, or server-sent events (each written and flushed on its own).
    body: Body,
    usage: Option<Usage>,
}

enum Body {
    Json(Value),
    Events(Vec<String>),
}

impl Reply {
    fn json(status: u16, headers: &[(&str, &str)], body: Value) -> Self {
        Self {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: Body::Json(body),
            usage: None,
        }
    }
}

async fn write_reply<S: AsyncWrite + Unpin>(io: &mut S, r: &Reply) -> std::io::Result<()> {
    let reason = match r.status {
        200 => "OK",
        404 => "Not Found",
        429 => "Too Many Requests",
        _ => "Error",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\nconnection: close\r\n", r.status);
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match &r.body {
        Body::Json(v) => {
            let body = v.to_string();
            head.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            ));
            io.write_all(head.as_bytes()).await?;
            io.write_all(body.as_bytes()).await?;
        }
        Body::Events(events) => {
            head.push_str("content-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n");
            io.write_all(head.as_bytes()).await?;
            for e in events {
                io.write_all(e.as_bytes()).await?;
                io.flush().await?;
            }
        }
    }
    io.flush().await?;
    io.shutdown().await
}

/// The patch of the script, in the `apply_patch` format.
fn patch() -> String {
    format!(
        "*** Begin Patch\n*** Add File: {}\n+{}*** Update File: edit.txt\n@@\n-hello\n+{}*** Delete File: doomed.txt\n*** End Patch\n",
        CREATED.0, CREATED.1, EDITED
    )
}

/// The same change as a shell command, for a CLI that offers no `apply_patch` tool.
fn patch_as_shell() -> String {
    format!(
        "printf '{}' > {} && printf '{}' > edit.txt && rm doomed.txt",
        CREATED.1.replace('\n', "\\n"),
        CREATED.0,
        EDITED.replace('\n', "\\n")
    )
}

/// What the CLI sent back from a tool call: the text of a `*_call_output` item.
fn output_text(item: &Value) -> String {
    match &item["output"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Object(o) => o
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    }
}

/// The Responses API, streamed: the next step of the script from what `input` holds.
fn responses(req: &Value, script: Script) -> Reply {
    let input = req["input"].as_array().cloned().unwrap_or_default();
    let outputs: Vec<&Value> = input
        .iter()
        .filter(|i| {
            i["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("_call_output"))
        })
        .collect();
    let step = outputs.len();
    let tools = req["tools"].as_array().cloned().unwrap_or_default();
    let tool = |name: &str| tools.iter().find(|t| t["name"] == name);
    let shell = if tool("exec_command").is_some() {
        Some("exec_command")
    } else if tool("shell").is_some() {
        Some("shell")
    } else {
        None
    };
    let shell_call = |cmd: &str, shell: &str| {
        let args = if shell == "exec_command" {
            json!({"cmd": cmd, "yield_time_ms": 10000})
        } else {
            json!({"command": ["bash", "-lc", cmd], "timeout_ms": 10000})
        };
        Item::Function {
            name: shell.to_owned(),
            arguments: args.to_string(),
        }
    };
    let usage = Usage {
        input_tokens: 1000 + 100 * step as u64,
        cached_tokens: 400,
        output_tokens: 50 + 10 * step as u64,
        reasoning_tokens: 8,
    };
    let item = match (script, step, tool("apply_patch"), shell) {
        (Script::Ask, 0, _, _) => Item::Function {
            name: "request_user_input".into(),
            arguments: json!({"questions": [{
                "id": "roles",
                "header": "Roles",
                "question": ASK_QUESTION,
                "options": ASK_OPTIONS.iter().map(|o| json!({"label": o, "description": o})).collect::<Vec<_>>(),
            }]})
            .to_string(),
        },
        (Script::Ask, _, _, _) => Item::Message(ASKED.into()),
        (Script::Change, step, patch_tool, shell) => match (step, patch_tool, shell) {
        (0, Some(t), _) if t["type"] == "custom" => Item::Custom {
            name: "apply_patch".into(),
            input: patch(),
        },
        (0, Some(_), _) => Item::Function {
            name: "apply_patch".into(),
            arguments: json!({"input": patch()}).to_string(),
        },
        (0, None, Some(sh)) => shell_call(&patch_as_shell(), sh),
        (1, _, Some(sh)) => shell_call(COMMAND, sh),
        _ => {
            let said = outputs.last().map(|o| output_text(o)).unwrap_or_default();
            Item::Message(format!("{FINAL} {}", said.trim()))
        }
        },
    };
    let model = req["model"].as_str().unwrap_or("gpt-5.5").to_owned();
    Reply {
        status: 200,
        headers: Vec::new(),
        body: Body::Events(response_events(&model, step, &item, usage)),
        usage: Some(usage),
    }
}

enum Item {
    Message(String),
    Function { name: String, arguments: String },
    Custom { name: String, input: String },
}

fn sse(seq: &mut u64, mut v: Value) -> String {
    v["sequence_number"] = json!(*seq);
    *seq += 1;
    let kind = v["type"].as_str().unwrap_or("").to_owned();
    format!("event: {kind}\ndata: {v}\n\n")
}

/// Halves of a string, cut on a character boundary, streamed as two deltas.
fn halves(s: &str) -> (&str, &str) {
    let mut mid = s.len() / 2;
    while !s.is_char_boundary(mid) {
        mid += 1;
    }
    s.split_at(mid)
}

fn response_events(model: &str, step: usize, item: &Item, u: Usage) -> Vec<String> {
    let id = format!("resp_{step}");
    let mut seq = 0;
    let mut ev = Vec::new();
    ev.push(sse(
        &mut seq,
        json!({"type": "response.created", "response": {"id": id, "object": "response", "status": "in_progress", "model": model, "output": []}}),
    ));
    let (item_id, done) = match item {
        Item::Message(text) => {
            let item_id = format!("msg_{step}");
            ev.push(sse(
                &mut seq,
                json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "message", "id": item_id, "role": "assistant", "status": "in_progress", "content": []}}),
            ));
            ev.push(sse(
                &mut seq,
                json!({"type": "response.content_part.added", "item_id": item_id, "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
            ));
            let (a, b) = halves(text);
            for d in [a, b] {
                ev.push(sse(
                    &mut seq,
                    json!({"type": "response.output_text.delta", "item_id": item_id, "output_index": 0, "content_index": 0, "delta": d}),
                ));
            }
            ev.push(sse(
                &mut seq,
                json!({"type": "response.output_text.done", "item_id": item_id, "output_index": 0, "content_index": 0, "text": text}),
            ));
            let part = json!({"type": "output_text", "text": text, "annotations": []});
            ev.push(sse(
                &mut seq,
                json!({"type": "response.content_part.done", "item_id": item_id, "output_index": 0, "content_index": 0, "part": part}),
            ));
            (
                item_id.clone(),
                json!({"type": "message", "id": item_id, "role": "assistant", "status": "completed", "content": [part]}),
            )
        }
        Item::Function { name, arguments } => {
            let item_id = format!("fc_{step}");
            let call_id = format!("call_{step}");
            ev.push(sse(
                &mut seq,
                json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": "", "status": "in_progress"}}),
            ));
            let (a, b) = halves(arguments);
            for d in [a, b] {
                ev.push(sse(
                    &mut seq,
                    json!({"type": "response.function_call_arguments.delta", "item_id": item_id, "output_index": 0, "delta": d}),
                ));
            }
            ev.push(sse(
                &mut seq,
                json!({"type": "response.function_call_arguments.done", "item_id": item_id, "output_index": 0, "arguments": arguments}),
            ));
            (
                item_id.clone(),
                json!({"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments, "status": "completed"}),
            )
        }
        Item::Custom { name, input } => {
            let item_id = format!("ctc_{step}");
            let call_id = format!("call_{step}");
            ev.push(sse(
                &mut seq,
                json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "custom_tool_call", "id": item_id, "call_id": call_id, "name": name, "input": "", "status": "in_progress"}}),
            ));
            let (a, b) = halves(input);
            for d in [a, b] {
                ev.push(sse(
                    &mut seq,
                    json!({"type": "response.custom_tool_call_input.delta", "item_id": item_id, "output_index": 0, "delta": d}),
                ));
            }
            ev.push(sse(
                &mut seq,
                json!({"type": "response.custom_tool_call_input.done", "item_id": item_id, "output_index": 0, "input": input}),
            ));
            (
                item_id.clone(),
                json!({"type": "custom_tool_call", "id": item_id, "call_id": call_id, "name": name, "input": input, "status": "completed"}),
            )
        }
    };
    let _ = item_id;
    ev.push(sse(
        &mut seq,
        json!({"type": "response.output_item.done", "output_index": 0, "item": done}),
    ));
    ev.push(sse(
        &mut seq,
        json!({"type": "response.completed", "response": {
            "id": id, "object": "response", "status": "completed", "model": model,
            "output": [done],
            "usage": {
                "input_tokens": u.input_tokens,
                "input_tokens_details": {"cached_tokens": u.cached_tokens},
                "output_tokens": u.output_tokens,
                "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
                "total_tokens": u.input_tokens + u.output_tokens
            }
        }}),
    ));
    ev
}

/// Chat Completions: the script's create and edit in the edit format the system prompt asks for.
fn chat(req: &Value) -> Reply {
    let messages = req["messages"].as_array().cloned().unwrap_or_default();
    let system: String = messages
        .iter()
        .filter(|m| m["role"] == "system")
        .filter_map(|m| m["content"].as_str())
        .collect();
    let text = if system.contains("SEARCH/REPLACE") {
        format!(
            "I will create {c} and edit edit.txt.\n\n{c}\n```\n<<<<<<< SEARCH\n=======\n{body}>>>>>>> REPLACE\n```\n\nedit.txt\n```\n<<<<<<< SEARCH\nhello\n=======\n{EDITED}>>>>>>> REPLACE\n```\n",
            c = CREATED.0,
            body = CREATED.1
        )
    } else {
        format!(
            "I will create {c} and edit edit.txt.\n\n{c}\n```\n{body}```\n\nedit.txt\n```\n{EDITED}```\n",
            c = CREATED.0,
            body = CREATED.1
        )
    };
    let usage = Usage {
        input_tokens: 1200,
        cached_tokens: 0,
        output_tokens: 60,
        reasoning_tokens: 0,
    };
    let model = req["model"].as_str().unwrap_or("gpt-4.1").to_owned();
    let usage_json = json!({
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}
    });
    if req["stream"] != true {
        let body = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage_json
        });
        let mut r = Reply::json(200, &[], body);
        r.usage = Some(usage);
        return r;
    }
    let chunk = |delta: Value, finish: Value| {
        let c = json!({
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
        });
        format!("data: {c}\n\n")
    };
    let (a, b) = halves(&text);
    let mut events = vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": a}), Value::Null),
        chunk(json!({"content": b}), Value::Null),
        chunk(json!({}), json!("stop")),
    ];
    if req["stream_options"]["include_usage"] == true {
        let c = json!({
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
            "choices": [], "usage": usage_json
        });
        events.push(format!("data: {c}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_owned());
    Reply {
        status: 200,
        headers: Vec::new(),
        body: Body::Events(events),
        usage: Some(usage),
    }
}
