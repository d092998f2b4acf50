//! A stub model API on 127.0.0.1: it answers requests with canned responses, in order (the last one
//! repeats), and records every request. Stands in for the Anthropic and OpenAI APIs in tests.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

/// One canned response.
#[derive(Clone, Debug)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Canned {
    pub fn ok(body: impl Into<String>) -> Self {
        Self {
            status: 200,
            headers: vec![],
            body: body.into(),
        }
    }

    pub fn status(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![],
            body: body.into(),
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }
}

/// A request as received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The body as sent (for signatures over its bytes).
    pub raw: String,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl Recorded {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
}

pub struct StubServer {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    _thread: std::thread::JoinHandle<()>,
}

#[derive(Clone)]
struct State {
    responses: Arc<Mutex<Vec<Canned>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

async fn handle(
    axum::extract::State(s): axum::extract::State<State>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let recorded = Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        raw: String::from_utf8_lossy(&body).into_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    };
    s.requests.lock().unwrap().push(recorded);
    let canned = {
        let mut r = s.responses.lock().unwrap();
        if r.len() > 1 {
            r.remove(0)
        } else {
            r[0].clone()
        }
    };
    let mut h = HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    for (k, v) in &canned.headers {
        h.insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    (StatusCode::from_u16(canned.status).unwrap(), h, canned.body)
}

impl StubServer {
    /// Starts on an ephemeral port of 127.0.0.1, in its own thread and runtime.
    pub fn start(responses: Vec<Canned>) -> Self {
        assert!(!responses.is_empty());
        let state = State {
            responses: Arc::new(Mutex::new(responses)),
            requests: Arc::new(Mutex::new(Vec::new())),
        };
        let requests = state.requests.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(handle).with_state(state);
                axum::serve(listener, app).await.unwrap();
            });
        });
        Self {
            url,
            requests,
            _thread: thread,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// An OpenAI Chat Completions reply from `model` with `content`.
pub fn openai_reply(
    model: &str,
    content: &str,
    prompt_tokens: u64,
    completion_tokens: u64,
) -> String {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
    })
    .to_string()
}

/// An Anthropic Messages reply with `text`.
pub fn anthropic_reply(text: &str, input_tokens: u64, output_tokens: u64) -> String {
    serde_json::json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    })
    .to_string()
}
