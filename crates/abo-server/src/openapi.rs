//! `/openapi.json`, generated from the route table; `openapi.json` in this crate is the committed
//! copy, and a test fails when the two drift.

use serde_json::{Map, Value, json};

use crate::routes::ROUTES;

/// The committed document.
pub const COMMITTED: &str = include_str!("../openapi.json");

fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": { "error": { "type": "object", "required": ["code", "message"],
            "properties": { "code": { "type": "string" }, "message": { "type": "string" } } } }
    })
}

fn request_body(method: &str, path: &str) -> Option<Value> {
    let schema = match (method, path) {
        ("post", "/v1/runs") => json!({ "$ref": "#/components/schemas/CreateRun" }),
        ("post", p) if p.starts_with("/v1/approvals/") => {
            json!({ "type": "object", "required": ["reason"], "properties": { "reason": { "type": "string", "minLength": 1 } } })
        }
        ("post", "/v1/policy/evaluate") => {
            json!({ "type": "object", "description": "the policy input (docs/policy.md)" })
        }
        _ => return None,
    };
    Some(json!({ "required": true, "content": { "application/json": { "schema": schema } } }))
}

fn parameters(path: &str) -> Vec<Value> {
    let mut p = Vec::new();
    if path.contains("{id}") {
        p.push(
            json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }),
        );
    }
    let query: &[(&str, &str)] = match path {
        "/v1/events" | "/v1/events/stream" => &[
            ("run", "string"),
            ("after", "integer"),
            ("limit", "integer"),
        ],
        "/v1/runs/{id}/tasks" => &[
            ("status", "string"),
            ("offset", "integer"),
            ("limit", "integer"),
        ],
        "/v1/tasks/{id}/retry" => &[("run", "string")],
        "/v1/report" => &[("since", "string")],
        _ => &[],
    };
    for (name, ty) in query {
        p.push(json!({ "name": name, "in": "query", "required": false, "schema": { "type": ty } }));
    }
    if path == "/v1/events/stream" {
        p.push(json!({ "name": "Last-Event-ID", "in": "header", "required": false, "schema": { "type": "integer" } }));
    }
    p
}

/// The OpenAPI 3 document of the API, from [`ROUTES`].
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let mut op = Map::new();
        op.insert("summary".into(), json!(r.summary));
        op.insert(
            "operationId".into(),
            json!(format!("{} {}", r.method, r.path)),
        );
        let params = parameters(r.path);
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(b) = request_body(r.method, r.path) {
            op.insert("requestBody".into(), b);
        }
        let ok = if r.method == "post" && r.path == "/v1/runs" {
            "201"
        } else {
            "200"
        };
        let mut responses = Map::new();
        responses.insert(ok.into(), json!({ "description": "success" }));
        match r.role {
            Some(role) => {
                op.insert("security".into(), json!([{ "bearer": [] }]));
                op.insert("x-abo-role".into(), json!(role.as_str()));
                responses.insert(
                    "401".into(),
                    json!({ "$ref": "#/components/responses/Error" }),
                );
                responses.insert(
                    "403".into(),
                    json!({ "$ref": "#/components/responses/Error" }),
                );
            }
            None => {
                op.insert("security".into(), json!([]));
            }
        }
        op.insert("responses".into(), Value::Object(responses));
        let entry = paths
            .entry(r.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = entry {
            m.insert(r.method.to_owned(), Value::Object(op));
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": { "title": "abo", "version": env!("CARGO_PKG_VERSION"),
                  "description": "The Autonomous Build Operator's control plane (docs/api.md)." },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": { "Error": { "description": "an error",
                "content": { "application/json": { "schema": error_schema() } } } },
            "schemas": {
                "CreateRun": {
                    "type": "object", "required": ["backlog"], "additionalProperties": false,
                    "properties": {
                        "backlog": { "type": "string", "description": "a backlog path inside the repository" },
                        "profile": { "type": "string" },
                        "usd": { "type": "number" },
                        "tokens": { "type": "integer" },
                        "wall": { "type": "string", "description": "a duration: 90s, 30m, 2h" }
                    }
                }
            }
        }
    })
}
