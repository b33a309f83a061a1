//! Merging several `-c`/`-f` files in order, as docker does: mappings
//! merge key by key, a later scalar replaces an earlier one, and lists
//! merge by what identifies their entries (a volume by its target, a
//! secret by its source, environment and labels by key), so an override
//! file changes one entry without repeating the rest.

use serde_yaml_ng::{Mapping, Value};

/// Merges `over` into `base`; `path` is where in the file they sit.
pub fn merge(base: &mut Value, over: Value, path: &mut Vec<String>) {
    match (base, over) {
        (Value::Mapping(base), Value::Mapping(over)) => {
            for (key, value) in over {
                let name = key.as_str().unwrap_or_default().to_string();
                path.push(name);
                match base.get_mut(&key) {
                    Some(existing) => merge_entry(existing, value, path),
                    None => {
                        base.insert(key, value);
                    }
                }
                path.pop();
            }
        }
        (base, over) => *base = over,
    }
}

/// How the list at `path` merges, for service keys (`services.NAME.KEY`).
fn merge_entry(base: &mut Value, over: Value, path: &mut Vec<String>) {
    let service_key = match path.as_slice() {
        [services, _, key] if services == "services" => Some(key.as_str()),
        [services, _, parent, key] if services == "services" && parent == "healthcheck" && key == "test" => Some("healthcheck.test"),
        _ => None,
    };
    match service_key {
        Some("command" | "entrypoint" | "healthcheck.test") => *base = over,
        Some("environment" | "labels" | "sysctls" | "networks" | "depends_on") => {
            let mut merged = as_mapping(std::mem::take(base));
            for (key, value) in as_mapping(over) {
                merged.insert(key, value);
            }
            *base = Value::Mapping(merged);
        }
        Some("volumes") => *base = merge_by(std::mem::take(base), over, volume_target),
        Some("secrets" | "configs") => *base = merge_by(std::mem::take(base), over, reference_source),
        _ => match (&mut *base, over) {
            (Value::Sequence(items), Value::Sequence(more)) => {
                for item in more {
                    if !items.contains(&item) {
                        items.push(item);
                    }
                }
            }
            (base, over) => merge(base, over, path),
        },
    }
}

/// A list of `KEY=VALUE` (or bare names) as a mapping; a mapping as is.
fn as_mapping(value: Value) -> Mapping {
    match value {
        Value::Mapping(mapping) => mapping,
        Value::Sequence(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(text) => match text.split_once('=') {
                    Some((key, value)) => (Value::from(key), Value::from(value)),
                    None => (Value::from(text), Value::Null),
                },
                other => (other, Value::Null),
            })
            .collect(),
        _ => Mapping::new(),
    }
}

/// Entries of `over` replace those of `base` with the same key; the rest
/// are appended in order.
fn merge_by(base: Value, over: Value, key: impl Fn(&Value) -> Option<String>) -> Value {
    let (Value::Sequence(mut items), Value::Sequence(more)) = (base, over.clone()) else {
        return over;
    };
    for item in more {
        let id = key(&item);
        match items.iter().position(|existing| id.is_some() && key(existing) == id) {
            Some(at) => items[at] = item,
            None => items.push(item),
        }
    }
    Value::Sequence(items)
}

fn volume_target(value: &Value) -> Option<String> {
    match value {
        Value::String(short) => {
            let parts: Vec<&str> = short.split(':').collect();
            parts.get(if parts.len() == 1 { 0 } else { 1 }).map(|t| t.to_string())
        }
        Value::Mapping(long) => long.get("target").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn reference_source(value: &Value) -> Option<String> {
    match value {
        Value::String(name) => Some(name.clone()),
        Value::Mapping(long) => long.get("source").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn an_override_file_changes_entries_without_repeating_the_rest() {
        let mut base = yaml(
            "services:\n  web:\n    image: web:1\n    command: [serve, --slow]\n    environment: [A=1, B=2]\n    ports: ['80:80']\n    volumes: ['data:/data', './conf:/etc/web:ro']\n    secrets: [db]\n",
        );
        let over = yaml(
            "services:\n  web:\n    image: web:2\n    command: [serve]\n    environment: {B: '3', C: '4'}\n    ports: ['443:443']\n    volumes: ['./other:/etc/web']\n    secrets: [{source: db, target: pw}]\n  db:\n    image: db\n",
        );
        merge(&mut base, over, &mut Vec::new());
        let want = yaml(
            "services:\n  web:\n    image: web:2\n    command: [serve]\n    environment: {A: '1', B: '3', C: '4'}\n    ports: ['80:80', '443:443']\n    volumes: ['data:/data', './other:/etc/web']\n    secrets: [{source: db, target: pw}]\n  db:\n    image: db\n",
        );
        assert_eq!(base, want);
    }
}
