//! Shared test helpers: a JSON-schema subset validator, temporary file names, [`fake`],
//! an in-process fake relay, and [`inproc`], the real relay in-process.
#![allow(dead_code)]

pub mod fake;
pub mod inproc;

use std::path::PathBuf;

use serde_json::Value;

/// A fresh path in the temp directory, unique per process and name.
pub fn temp_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("loadgen-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

pub fn load_schema() -> Value {
    let text = include_str!("../../report.schema.json");
    serde_json::from_str(text).expect("schema is JSON")
}

/// Validates `v` against the subset of JSON Schema that report.schema.json uses:
/// type, enum, minimum, properties, required, additionalProperties, items, $ref to $defs.
pub fn validate(root: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r
            .strip_prefix("#/$defs/")
            .ok_or(format!("{at}: unsupported $ref {r}"))?;
        let target = &root["$defs"][name];
        return validate(root, target, v, at);
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => return Err(format!("{at}: bad type keyword")),
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            "number" => v.is_number(),
            "integer" => v.is_u64() || v.is_i64(),
            _ => false,
        });
        if !ok {
            return Err(format!("{at}: {v} is not of type {types:?}"));
        }
        if v.is_null() {
            return Ok(());
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return Err(format!("{at}: {v} not in {e:?}"));
        }
    }
    if let (Some(min), Some(x)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if x < min {
            return Err(format!("{at}: {x} < minimum {min}"));
        }
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    return Err(format!("{at}: missing required {r}"));
                }
            }
        }
        for (k, val) in obj {
            let path = format!("{at}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(root, s, val, &path)?,
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return Err(format!("{at}: unexpected property {k}"))
                    }
                    Some(s @ Value::Object(_)) => validate(root, s, val, &path)?,
                    _ => {}
                },
            }
        }
        // Every documented property must also be one the report really has (schema drift).
        if let Some(p) = props {
            for k in p.keys() {
                if !obj.contains_key(k) {
                    return Err(format!(
                        "{at}: schema documents {k} but the report lacks it"
                    ));
                }
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            validate(root, items, x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Parses a report file and checks it against loadgen/report.schema.json.
pub fn check_report_file(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).expect("report file written");
    let v: Value = serde_json::from_str(&text).expect("report is JSON");
    let schema = load_schema();
    if let Err(e) = validate(&schema, &schema, &v, "$") {
        panic!("report does not match schema: {e}\n{text}");
    }
    v
}

#[test]
fn validator_rejects_bad_documents() {
    let schema = load_schema();
    let pct = &schema["$defs"]["percentiles"];
    let good = serde_json::json!({"count":1,"p50":1.0,"p90":1.0,"p99":1.0,"p999":1.0,"p9999":1.0,"max":1.0,"mean":1.0});
    assert!(validate(&schema, pct, &good, "$").is_ok());
    let mut extra = good.clone();
    extra["p42"] = 1.into();
    assert!(validate(&schema, pct, &extra, "$").is_err());
    let mut missing = good.clone();
    missing.as_object_mut().expect("object").remove("max");
    assert!(validate(&schema, pct, &missing, "$").is_err());
    let mut wrong = good;
    wrong["count"] = "one".into();
    assert!(validate(&schema, pct, &wrong, "$").is_err());
}
