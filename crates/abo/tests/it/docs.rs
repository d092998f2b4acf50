//! The documents a person reads: `abo init` writes the JSON Schemas its templates point to (the
//! committed ones), the templates and a typo check against those schemas as the parser checks
//! them, and every document the docs link to exists.

use abo_test_support::TestRepo;
use serde_json::Value;

use crate::abo;

const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs");

/// The reasons `value` does not fit `schema` (the subset of JSON Schema abo's schemas use).
fn violations(schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    if let Some(any) = schema["anyOf"].as_array() {
        if !any.iter().any(|s| {
            let mut v = Vec::new();
            violations(s, value, at, &mut v);
            v.is_empty()
        }) {
            out.push(format!("{at}: fits none of anyOf"));
        }
        return;
    }
    if let Some(e) = schema["enum"].as_array()
        && !e.contains(value)
    {
        out.push(format!("{at}: {value} is not one of {e:?}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let fits = |t: &str| match t {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    };
    if !types.is_empty() && !types.iter().any(|t| fits(t)) {
        out.push(format!("{at}: {value} is not {types:?}"));
        return;
    }
    if let Some(obj) = value.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            if !obj.contains_key(r.as_str().unwrap_or("")) {
                out.push(format!("{at}: `{r}` is required"));
            }
        }
        for (k, v) in obj {
            let inner = &schema["properties"][k];
            if inner.is_object() {
                violations(inner, v, &format!("{at}.{k}"), out);
            } else {
                match &schema["additionalProperties"] {
                    Value::Bool(false) => out.push(format!("{at}: unknown key `{k}`")),
                    s @ Value::Object(_) => violations(s, v, &format!("{at}.{k}"), out),
                    _ => {}
                }
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, v) in list.iter().enumerate() {
            violations(items, v, &format!("{at}[{i}]"), out);
        }
    }
}

fn check(schema: &Value, yaml: &str) -> Vec<String> {
    let value: Value = serde_yaml::from_str(yaml).unwrap();
    let mut out = Vec::new();
    violations(schema, &value, "", &mut out);
    out
}

#[test]
fn init_writes_the_schemas_its_templates_point_to_and_they_check_as_the_parser_does() {
    let repo = TestRepo::new();
    let out = abo(&repo, &["init"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for (file, schema) in [
        ("abo.yml", "abo.schema.json"),
        ("backlog.example.yml", "backlog.schema.json"),
    ] {
        let text = repo.read(file);
        assert!(
            text.starts_with(&format!(
                "# yaml-language-server: $schema=.abo/schema/{schema}\n"
            )),
            "{file}: {text}"
        );
        let written = std::fs::read_to_string(repo.path.join(".abo/schema").join(schema)).unwrap();
        let committed = std::fs::read_to_string(format!("{DOCS}/schema/{schema}")).unwrap();
        assert_eq!(written, committed, "{schema}");
        let schema: Value = serde_json::from_str(&committed).unwrap();
        assert_eq!(check(&schema, &text), Vec::<String>::new(), "{file}");
        // A typo: the parser refuses it, and so does the schema.
        let typo = text
            .replacen("tasks:", "taks:", 1)
            .replacen("timeouts:", "timeout:", 1);
        assert!(!check(&schema, &typo).is_empty(), "{file} with a typo");
    }
    // The same typo in abo.yml: the parser's error names the nearest key.
    let text = repo.read("abo.yml").replacen("timeouts:", "timeout:", 1);
    repo.write("abo.yml", &text);
    let out = abo(&repo, &["status"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("timeout"), "{}", out.stderr);
}

#[test]
fn every_document_the_docs_link_to_exists_and_none_points_outside_the_repository() {
    let mut checked = 0;
    for entry in std::fs::read_dir(DOCS).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("DESIGN"),
            "{} refers to a document outside the repository",
            path.display()
        );
        for link in text.split("](").skip(1) {
            let target = link.split([')', '#']).next().unwrap_or("");
            if target.is_empty() || target.starts_with("http") {
                continue;
            }
            assert!(
                std::path::Path::new(DOCS).join(target).exists(),
                "{} links to {target}, which does not exist",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} links checked");
}
