//! The value syntaxes a compose key may take in more than one form (a
//! string or a list, a list or a map, a short string or a long mapping),
//! each read into one typed form with an error that says what was wrong.
//! They deserialize through a YAML value (`try_from`) so a mismatch gets
//! its own sentence instead of serde's "did not match any variant".

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::commands::flags;

/// A scalar as text: compose accepts `8080`, `true` and `"x"` alike where a
/// string is meant (`environment: {DEBUG: 1}`).
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What a YAML value is, for messages ("found a list").
pub fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Each item of a YAML list as a string.
fn string_list(items: &[Value]) -> Result<Vec<String>, String> {
    items
        .iter()
        .map(|item| scalar_text(item).ok_or_else(|| format!("a list item is {}, not a string", value_kind(item))))
        .collect()
}

/// A scalar parsed by `parse`; anything else is "expected `example`".
fn from_scalar<T>(value: &Value, example: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, String> {
    let text = scalar_text(value).ok_or_else(|| format!("expected {example}, found {}", value_kind(value)))?;
    parse(&text)
}

/// `command: echo hi` (split as a shell would, without running one) or
/// `command: ["echo", "hi"]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct Words(pub Vec<String>);

impl TryFrom<Value> for Words {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        match &value {
            Value::Sequence(items) => string_list(items).map(Words),
            Value::Null => Ok(Words(Vec::new())),
            other => from_scalar(other, "a string or a list of strings", |text| {
                flags::shell_split("the command", text).map(Words).map_err(|e| e.to_string())
            }),
        }
    }
}

/// `dns: 1.1.1.1` or a list: one string or several.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct OneOrMany(pub Vec<String>);

impl TryFrom<Value> for OneOrMany {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        match &value {
            Value::Sequence(items) => string_list(items).map(OneOrMany),
            Value::Null => Ok(OneOrMany(Vec::new())),
            other => from_scalar(other, "a string or a list of strings", |text| Ok(OneOrMany(vec![text.to_string()]))),
        }
    }
}

/// `environment`, `labels`, `sysctls`, `extra_hosts`: a map, or a list of
/// `KEY=VALUE` (or `HOST:IP` for extra_hosts) strings. A value of `None`
/// (`- KEY` or `KEY:` with nothing) means "from the environment" for
/// `environment` and an empty string elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct KeyValues(pub BTreeMap<String, Option<String>>);

impl TryFrom<Value> for KeyValues {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        match value {
            Value::Null => {}
            Value::Sequence(items) => {
                for item in items {
                    let text = scalar_text(&item).ok_or_else(|| format!("a list item is {}, not KEY=VALUE", value_kind(&item)))?;
                    match text.split_once('=') {
                        Some((key, value)) => map.insert(key.to_string(), Some(value.to_string())),
                        None => map.insert(text, None),
                    };
                }
            }
            Value::Mapping(entries) => {
                for (key, value) in entries {
                    let key = scalar_text(&key).ok_or_else(|| format!("a key is {}, not a string", value_kind(&key)))?;
                    let value = match &value {
                        Value::Null => None,
                        other => Some(scalar_text(other).ok_or_else(|| format!("{key} is {}, not a string", value_kind(other)))?),
                    };
                    map.insert(key, value);
                }
            }
            other => return Err(format!("expected a mapping or a list of KEY=VALUE, found {}", value_kind(&other))),
        }
        Ok(KeyValues(map))
    }
}

impl KeyValues {
    /// The entries as docker's `KEY=VALUE` strings, a missing value as empty.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_deref().unwrap_or("")))
    }
}

/// A Go-syntax duration (`10s`, `1m30s`, `500ms`), in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct DurationMs(pub u64);

impl TryFrom<Value> for DurationMs {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        from_scalar(&value, "a duration such as 10s", |text| {
            let duration = flags::parse_duration("the duration", text).map_err(|e| e.to_string())?;
            Ok(DurationMs(duration.as_millis().try_into().unwrap_or(u64::MAX)))
        })
    }
}

/// A byte size (`512m`, `1g`, `1048576`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct Bytes(pub u64);

impl TryFrom<Value> for Bytes {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        from_scalar(&value, "a size such as 512m", |text| flags::parse_bytes("the size", text).map(Bytes).map_err(|e| e.to_string()))
    }
}

/// `cpus: 0.5` or `cpus: "0.5"`, as nano-CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct NanoCpus(pub u64);

impl TryFrom<Value> for NanoCpus {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        from_scalar(&value, "a number of CPUs such as 0.5", |text| flags::parse_cpus("cpus", text).map(NanoCpus).map_err(|e| e.to_string()))
    }
}

/// An octal file mode: `0440` is read as octal whether YAML gave a string or
/// (as YAML 1.1 files often do) a decimal number like 288.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct FileMode(pub u32);

impl TryFrom<Value> for FileMode {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        let mode = match &value {
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            Value::String(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).ok(),
            _ => None,
        };
        mode.filter(|m| *m <= 0o7777)
            .map(FileMode)
            .ok_or_else(|| format!("{} is not a file mode; write one such as 0440", scalar_text(&value).unwrap_or_else(|| value_kind(&value).into())))
    }
}

/// A number that YAML may have given as a string (`"3"`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct Count(pub u64);

impl TryFrom<Value> for Count {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        scalar_text(&value)
            .and_then(|text| text.parse().ok())
            .map(Count)
            .ok_or_else(|| format!("expected a whole number, found {}", scalar_text(&value).unwrap_or_else(|| value_kind(&value).into())))
    }
}

/// A boolean that YAML may have given as a string (`"true"`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct Flag(pub bool);

impl TryFrom<Value> for Flag {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, String> {
        match &value {
            Value::Bool(b) => Ok(Flag(*b)),
            Value::String(s) if matches!(s.as_str(), "true" | "yes" | "on") => Ok(Flag(true)),
            Value::String(s) if matches!(s.as_str(), "false" | "no" | "off") => Ok(Flag(false)),
            other => Err(format!("expected true or false, found {}", scalar_text(other).unwrap_or_else(|| value_kind(other).into()))),
        }
    }
}

/// Reads a long-syntax mapping into `T`, refusing unknown fields.
pub fn long_form<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_yaml_ng::from_value(value).map_err(|e| e.to_string())
}
