//! The vendored Firecracker API spec (Swagger 2.0), and a checker of request bodies
//! against it: shared by the spec tests and the fake Firecracker.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::Value;

/// The vendored Firecracker API spec (Swagger 2.0), for checking request bodies.
pub struct ApiSpec {
    pub doc: Value,
}

impl ApiSpec {
    pub fn load() -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/spec/firecracker-api.yaml");
        let text = std::fs::read_to_string(path).expect("the vendored spec");
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
        let doc = serde_json::to_value(yaml).expect("JSON-compatible spec");
        assert_eq!(doc["swagger"], "2.0");
        Self { doc }
    }

    /// A definition of the spec by name (panics when there is none).
    pub fn definition(&self, name: &str) -> &Value {
        let d = &self.doc["definitions"][name];
        assert!(d.is_object(), "no definition {name}");
        d
    }

    /// Every way `method path` with `body` departs from the spec: no such operation, a
    /// body where none is taken (or none where one is required), a missing required or
    /// an unknown property, a wrong type or enum value, a path id the body contradicts.
    pub fn check(&self, method: &str, path: &str, body: Option<&Value>) -> Vec<String> {
        let what = format!("{method} {path}");
        let (op, params) = match self.operation(method, path) {
            Ok(x) => x,
            Err(e) => return vec![e],
        };
        let body_param = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["in"] == "body");
        let mut errors = vec![];
        match (body_param, body) {
            (None, None) => {}
            (None, Some(_)) => errors.push(format!("{what}: the spec takes no body")),
            (Some(p), None) => {
                if p["required"] == true {
                    errors.push(format!("{what}: the spec requires a body"));
                }
            }
            (Some(p), Some(body)) => {
                self.validate(body, &p["schema"], &what, &mut errors);
                for (name, value) in &params {
                    if let Some(v) = body.get(name) {
                        if v.as_str() != Some(value.as_str()) {
                            errors.push(format!(
                                "{what}: path parameter {name}={value} but the body says {v}"
                            ));
                        }
                    }
                }
            }
        }
        errors
    }

    fn operation(
        &self,
        method: &str,
        path: &str,
    ) -> Result<(&Value, BTreeMap<String, String>), String> {
        let paths = self.doc["paths"].as_object().ok_or("no paths")?;
        let method = method.to_ascii_lowercase();
        let wanted: Vec<&str> = path.split('/').collect();
        let mut candidates: Vec<(&String, &Value)> = paths.iter().collect();
        candidates.sort_by_key(|(p, _)| p.contains('{'));
        for (template, item) in candidates {
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != wanted.len() {
                continue;
            }
            let mut params = BTreeMap::new();
            let matched = parts.iter().zip(&wanted).all(|(t, w)| {
                match t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                    Some(name) if !w.is_empty() => {
                        params.insert(name.to_owned(), (*w).to_owned());
                        true
                    }
                    Some(_) => false,
                    None => t == w,
                }
            });
            if matched {
                return item
                    .get(&method)
                    .map(|op| (op, params))
                    .ok_or_else(|| format!("{template} has no {method} operation"));
            }
        }
        Err(format!("no path in the spec matches {path}"))
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> Result<&'a Value, String> {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r
                    .strip_prefix("#/definitions/")
                    .ok_or_else(|| format!("unsupported $ref {r}"))?;
                let d = &self.doc["definitions"][name];
                if d.is_object() {
                    Ok(d)
                } else {
                    Err(format!("dangling $ref {r}"))
                }
            }
            None => Ok(schema),
        }
    }

    /// Every way `value` departs from `schema` (a `$ref` or an inline schema), each
    /// prefixed with `at`.
    pub fn validate(&self, value: &Value, schema: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = match self.resolve(schema) {
            Ok(s) => s,
            Err(e) => return errors.push(format!("{at}: {e}")),
        };
        let ty = schema["type"]
            .as_str()
            .unwrap_or(if schema.get("properties").is_some() {
                "object"
            } else {
                ""
            });
        let type_ok = match ty {
            "object" => value.is_object(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "" => true,
            other => return errors.push(format!("{at}: unsupported schema type {other}")),
        };
        if !type_ok {
            return errors.push(format!("{at}: expected {ty}, got {value}"));
        }
        if let Some(allowed) = schema["enum"].as_array() {
            if !allowed.contains(value) {
                errors.push(format!("{at}: {value} is not one of {allowed:?}"));
            }
        }
        if let Some(n) = value.as_f64() {
            if schema["minimum"].as_f64().is_some_and(|min| n < min) {
                errors.push(format!("{at}: {n} is below the minimum"));
            }
            if schema["maximum"].as_f64().is_some_and(|max| n > max) {
                errors.push(format!("{at}: {n} is above the maximum"));
            }
        }
        match value {
            Value::Object(map) => {
                for req in schema["required"].as_array().into_iter().flatten() {
                    if let Some(name) = req.as_str() {
                        if !map.contains_key(name) {
                            errors.push(format!("{at}: required property {name} is missing"));
                        }
                    }
                }
                let props = schema["properties"].as_object();
                let additional = &schema["additionalProperties"];
                for (k, v) in map {
                    let here = format!("{at}.{k}");
                    match props.and_then(|p| p.get(k)) {
                        Some(s) => self.validate(v, s, &here, errors),
                        None if additional.is_object() => {
                            self.validate(v, additional, &here, errors)
                        }
                        None if *additional == Value::Bool(true) => {}
                        None => errors.push(format!("{here}: unknown property")),
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.validate(item, &schema["items"], &format!("{at}[{i}]"), errors);
                }
            }
            _ => {}
        }
    }
}
