//! Variable substitution in compose files, as Docker's loader does it:
//! `$VAR`, `${VAR}`, `${VAR:-default}` / `${VAR-default}` (default when
//! unset or empty / when unset), `${VAR:?message}` / `${VAR?message}`
//! (an error), `${VAR:+alt}` / `${VAR+alt}` (alt when set), and `$$` for a
//! literal `$`. Defaults and alternatives may themselves hold variables.

use std::collections::{BTreeSet, HashMap};

/// Why a string could not be substituted; the caller adds the key path.
#[derive(Debug, PartialEq)]
pub enum InterpolationError {
    /// `${VAR:?message}` or `${VAR?message}` with VAR missing.
    Required { var: String, message: String },
    /// A `$` that starts no variable, or an unclosed `${`.
    Invalid { text: String },
}

/// Substitutes `text` from `env`. Variables used but not set are added to
/// `unset` (docker warns about each and substitutes an empty string).
pub fn substitute(
    text: &str,
    env: &HashMap<String, String>,
    unset: &mut BTreeSet<String>,
) -> Result<String, InterpolationError> {
    let invalid = || InterpolationError::Invalid { text: text.to_string() };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let close = matching_brace(inner).ok_or_else(invalid)?;
            out.push_str(&braced(&inner[..close], env, unset).map_err(|e| match e {
                InterpolationError::Invalid { .. } => invalid(),
                required => required,
            })?);
            rest = &inner[close + 1..];
        } else {
            let name_len = name_length(after);
            if name_len == 0 {
                return Err(invalid());
            }
            out.push_str(&lookup(&after[..name_len], env, unset));
            rest = &after[name_len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `VAR`, `VAR:-default` and the other forms inside `${...}`.
fn braced(
    inner: &str,
    env: &HashMap<String, String>,
    unset: &mut BTreeSet<String>,
) -> Result<String, InterpolationError> {
    let name_len = name_length(inner);
    let (name, operator) = inner.split_at(name_len);
    if name.is_empty() {
        return Err(InterpolationError::Invalid { text: inner.to_string() });
    }
    let value = env.get(name);
    let set_nonempty = value.is_some_and(|v| !v.is_empty());
    let (colon, operator) = match operator.strip_prefix(':') {
        Some(op) => (true, op),
        None => (false, operator),
    };
    // With a colon an empty value counts as unset.
    let present = if colon { set_nonempty } else { value.is_some() };
    let mut chars = operator.chars();
    let op = chars.next();
    let word = chars.as_str();
    match op {
        None if !colon => Ok(lookup(name, env, unset)),
        Some('-') => match present {
            true => Ok(value.cloned().unwrap_or_default()),
            false => substitute(word, env, unset),
        },
        Some('+') => match present {
            true => substitute(word, env, unset),
            false => Ok(String::new()),
        },
        Some('?') => match present {
            true => Ok(value.cloned().unwrap_or_default()),
            false => Err(InterpolationError::Required {
                var: name.to_string(),
                message: substitute(word, env, unset)?,
            }),
        },
        _ => Err(InterpolationError::Invalid { text: inner.to_string() }),
    }
}

fn lookup(name: &str, env: &HashMap<String, String>, unset: &mut BTreeSet<String>) -> String {
    match env.get(name) {
        Some(value) => value.clone(),
        None => {
            unset.insert(name.to_string());
            String::new()
        }
    }
}

/// Length of the variable name at the start of `text`: a letter or `_`,
/// then letters, digits and `_`.
fn name_length(text: &str) -> usize {
    let bytes = text.as_bytes();
    if bytes.first().is_none_or(|b| !(b.is_ascii_alphabetic() || *b == b'_')) {
        return 0;
    }
    bytes.iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count()
}

/// Index of the `}` closing a `${` whose body starts `text`, counting
/// nested `${...}` in defaults.
fn matching_brace(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        [("TAG", "1.2"), ("EMPTY", ""), ("PORT", "8080")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sub(text: &str) -> Result<String, InterpolationError> {
        substitute(text, &env(), &mut BTreeSet::new())
    }

    #[test]
    fn every_form_substitutes_as_docker_does() {
        let cases = [
            ("web:$TAG", "web:1.2"),
            ("web:${TAG}", "web:1.2"),
            ("${MISSING:-def}", "def"),
            ("${EMPTY:-def}", "def"),
            ("${EMPTY-def}", ""),
            ("${MISSING-def}", "def"),
            ("${TAG:-def}", "1.2"),
            ("${TAG:+alt}", "alt"),
            ("${EMPTY:+alt}", ""),
            ("${EMPTY+alt}", "alt"),
            ("${MISSING+alt}", ""),
            ("$$TAG costs $$5", "$TAG costs $5"),
            ("${MISSING:-${PORT}}", "8080"),
            ("${MISSING:-a-${MISSING2:-b}-c}", "a-b-c"),
            ("no variables", "no variables"),
            ("$TAG.$PORT", "1.2.8080"),
        ];
        for (text, want) in cases {
            assert_eq!(sub(text).as_deref(), Ok(want), "{text}");
        }
    }

    #[test]
    fn unset_variables_become_empty_and_are_reported() {
        let mut unset = BTreeSet::new();
        let out = substitute("a${NOPE}b$ALSO_NOPE", &env(), &mut unset).unwrap();
        assert_eq!(out, "ab");
        assert_eq!(unset.into_iter().collect::<Vec<_>>(), ["ALSO_NOPE", "NOPE"]);
    }

    #[test]
    fn required_variables_fail_with_their_message() {
        assert_eq!(
            sub("${DB_PASSWORD:?must be set}"),
            Err(InterpolationError::Required { var: "DB_PASSWORD".into(), message: "must be set".into() })
        );
        assert_eq!(
            sub("${EMPTY:?empty is not enough}"),
            Err(InterpolationError::Required { var: "EMPTY".into(), message: "empty is not enough".into() })
        );
        assert_eq!(sub("${EMPTY?only unset fails}").as_deref(), Ok(""));
    }

    #[test]
    fn malformed_references_are_refused() {
        for text in ["price $5", "${TAG", "${}", "${TAG:x}", "$", "${1A}"] {
            assert!(matches!(sub(text), Err(InterpolationError::Invalid { .. })), "{text}");
        }
    }
}
