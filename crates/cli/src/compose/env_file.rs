//! `.env` files (the project's variables) and `env_file:` files (a
//! service's environment), in docker compose's syntax: `KEY=VALUE` lines,
//! optional `export `, `#` comments, single quotes literal, double quotes
//! with `\n`-style escapes, unquoted values ending at ` #`.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use super::interpolate::{substitute, InterpolationError};

/// One `KEY=VALUE` (value `None` for a bare `KEY`: take it from the
/// environment, as `env_file:` does).
pub type Entry = (String, Option<String>);

/// Reads and parses `path`; errors name the file and the line.
pub fn read(path: &Path) -> Result<Vec<Entry>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the env file {}: {e}; check the path", path.display()))?;
    parse(&text).map_err(|(line, why)| format!("{} line {line}: {why}", path.display()))
}

/// Parses an env file's text; an error gives the 1-based line and why.
pub fn parse(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let mut entries = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let (key, value) = match line.split_once('=') {
            Some((key, value)) => (key.trim_end(), Some(value)),
            None => (line.trim_end(), None),
        };
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err((index + 1, format!("`{}` is not KEY=VALUE; write one variable per line", raw.trim())));
        }
        let value = match value {
            None => None,
            Some(value) => Some(unquote(value.trim_start()).map_err(|why| (index + 1, why))?),
        };
        entries.push((key.to_string(), value));
    }
    Ok(entries)
}

fn unquote(value: &str) -> Result<String, String> {
    if let Some(body) = value.strip_prefix('\'') {
        let end = body.find('\'').ok_or("a single-quoted value is not closed; add the closing '")?;
        return Ok(body[..end].to_string());
    }
    if let Some(body) = value.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Ok(out),
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(other) => out.push(other),
                    None => break,
                },
                c => out.push(c),
            }
        }
        return Err("a double-quoted value is not closed; add the closing \"".into());
    }
    let value = match value.find(" #") {
        Some(comment) => &value[..comment],
        None => value,
    };
    Ok(value.trim_end().to_string())
}

/// The project's variables: the process environment, then the `.env`
/// file's entries for names the environment does not set (the shell wins,
/// as in docker compose). Values in the file may use the variables above
/// them and the environment's.
pub fn project_environment(
    process: HashMap<String, String>,
    dot_env: Option<&Path>,
) -> Result<HashMap<String, String>, String> {
    let mut env = process.clone();
    let Some(path) = dot_env else { return Ok(env) };
    for (key, value) in read(path)? {
        let Some(value) = value else { continue };
        let value = substitute(&value, &env, &mut BTreeSet::new()).map_err(|e| match e {
            InterpolationError::Required { var, message } => {
                format!("{}: {key} needs {var}: {message}", path.display())
            }
            InterpolationError::Invalid { text } => {
                format!("{}: {key} has an invalid variable reference in `{text}`; write $$ for a literal $", path.display())
            }
        })?;
        if !process.contains_key(&key) {
            env.insert(key, value);
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_as_docker_compose_reads_them() {
        let text = "# comment\n\nA=1\nexport B = two words # trailing\nC='lit $X #no'\nD=\"line\\nnext\"\nE=\nF\n  G=x=y\n";
        let got = parse(text).unwrap();
        let want: Vec<Entry> = vec![
            ("A".into(), Some("1".into())),
            ("B".into(), Some("two words".into())),
            ("C".into(), Some("lit $X #no".into())),
            ("D".into(), Some("line\nnext".into())),
            ("E".into(), Some("".into())),
            ("F".into(), None),
            ("G".into(), Some("x=y".into())),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn bad_lines_name_their_number() {
        assert_eq!(parse("A=1\nnot a variable\n").unwrap_err().0, 2);
        assert_eq!(parse("A=\"open\n").unwrap_err().0, 1);
    }

    #[test]
    fn the_shell_wins_over_the_file_and_the_file_may_use_variables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "TAG=from-file\nHOST=db\nURL=mysql://${HOST}:${PORT:-3306}\n").unwrap();
        let process: HashMap<String, String> = [("TAG".to_string(), "from-shell".to_string())].into();
        let env = project_environment(process, Some(&path)).unwrap();
        assert_eq!(env["TAG"], "from-shell");
        assert_eq!(env["URL"], "mysql://db:3306");
    }
}
