//! The demo's stand-in model: an OpenAI-compatible Chat Completions endpoint on 127.0.0.1 that
//! answers the demo's model task with a fixed diff, so `abo demo` needs no network and no key.
//! It is real HTTP, spoken by the same client that talks to real providers.

use axum::Json;
use axum::routing::post;
use serde_json::{Value, json};

const REPLY: &str =
    "I added a short contributing guide that names the two gates every change must pass.

```diff
--- /dev/null
+++ b/CONTRIBUTING.md
@@ -0,0 +1,4 @@
+# Contributing
+
+Every change passes `sh lint.sh` and `sh run_tests.sh` before it lands.
+Keep the shell scripts free of trailing whitespace.
```
";

async fn completions(Json(body): Json<Value>) -> Json<Value> {
    let prompt: usize = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["content"].as_str())
        .map(|c| c.len().div_ceil(4))
        .sum();
    let completion = REPLY.len().div_ceil(4);
    Json(json!({
        "id": "chatcmpl-demo",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"].as_str().unwrap_or("demo-model"),
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": REPLY }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion },
    }))
}

/// Serves until the process ends; returns the base URL (`http://127.0.0.1:PORT/v1`).
pub(crate) async fn start() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1", listener.local_addr()?);
    let app = axum::Router::new().route("/v1/chat/completions", post(completions));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}
