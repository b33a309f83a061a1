//! `--format` as docker takes it: `table` (the default columns), `json`,
//! or a Go template of the common kind, `{{.Field}}` and
//! `{{.Label "key"}}` between literal text, `\t` between columns; with a
//! `table ` prefix the columns line up under a header. The subset people
//! paste from docker's documentation; anything else is refused, naming it.

use crate::error::{CliError, CliResult};

/// What `--format` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
    Template { table: bool, parts: Vec<Part> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Field(String),
    /// `{{.Label "key"}}`.
    Label(String),
}

impl OutputFormat {
    /// Reads `--format`; `fields` are the names a template may use.
    pub fn parse(value: Option<&str>, fields: &[&str]) -> CliResult<OutputFormat> {
        let value = match value {
            None | Some("table") => return Ok(OutputFormat::Table),
            Some("json") => return Ok(OutputFormat::Json),
            Some(value) => value,
        };
        let (table, template) = match value.strip_prefix("table ") {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        // Shells hand `\t` over as two characters; docker reads them as a tab.
        let template = template.replace("\\t", "\t").replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = template.as_str();
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let end = rest[start..].find("}}").ok_or_else(|| CliError::msg(format!("--format {value:?} has a {{{{ without }}}}; close it")))?;
            let action = rest[start + 2..start + end].trim();
            parts.push(parse_action(action, fields, value)?);
            rest = &rest[start + end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(OutputFormat::Template { table, parts })
    }
}

fn parse_action(action: &str, fields: &[&str], whole: &str) -> CliResult<Part> {
    let unknown = || {
        CliError::msg(format!("--format {whole:?}: {{{{{action}}}}} is not a field here; use one of {}", fields.iter().map(|f| format!("{{{{.{f}}}}}")).collect::<Vec<_>>().join(" ")))
    };
    let name = action.strip_prefix('.').ok_or_else(unknown)?;
    if let Some(key) = name.strip_prefix("Label ") {
        let key = key.trim().trim_matches('"');
        return Ok(Part::Label(key.to_string()));
    }
    if fields.contains(&name) {
        Ok(Part::Field(name.to_string()))
    } else {
        Err(unknown())
    }
}

/// Prints `rows` by `parts`: `value(row, field)` gives a field, `label(row,
/// key)` a label; `header(field)` names a column for `table`.
pub fn print<R>(
    rows: &[R],
    table: bool,
    parts: &[Part],
    value: impl Fn(&R, &str) -> String,
    label: impl Fn(&R, &str) -> String,
    header: impl Fn(&str) -> String,
) {
    let render = |row: Option<&R>| -> String {
        parts
            .iter()
            .map(|part| match (part, row) {
                (Part::Text(text), _) => text.clone(),
                (Part::Field(field), Some(row)) => value(row, field),
                (Part::Field(field), None) => header(field),
                (Part::Label(key), Some(row)) => label(row, key),
                (Part::Label(key), None) => key.to_uppercase(),
            })
            .collect()
    };
    let mut lines: Vec<String> = Vec::new();
    if table {
        lines.push(render(None));
    }
    lines.extend(rows.iter().map(|row| render(Some(row))));
    if !table {
        lines.iter().for_each(|line| println!("{line}"));
        return;
    }
    // Tab-separated cells, padded to line up as docker's tabwriter does.
    let cells: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let columns = cells.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns).map(|c| cells.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    for row in cells {
        let line: String = row
            .iter()
            .enumerate()
            .map(|(c, cell)| if c + 1 < row.len() { format!("{cell:<width$}   ", width = widths[c]) } else { cell.to_string() })
            .collect();
        println!("{}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[&str] = &["ID", "Names", "Status"];

    #[test]
    fn templates_read_as_dockers() {
        assert_eq!(OutputFormat::parse(None, FIELDS).unwrap(), OutputFormat::Table);
        assert_eq!(OutputFormat::parse(Some("json"), FIELDS).unwrap(), OutputFormat::Json);
        let OutputFormat::Template { table, parts } = OutputFormat::parse(Some(r#"table {{.Names}}\t{{ .Status }} {{.Label "app"}}"#), FIELDS).unwrap() else {
            panic!("a template")
        };
        assert!(table);
        assert_eq!(
            parts,
            vec![
                Part::Field("Names".into()),
                Part::Text("\t".into()),
                Part::Field("Status".into()),
                Part::Text(" ".into()),
                Part::Label("app".into()),
            ]
        );
        let error = OutputFormat::parse(Some("{{.Nope}}"), FIELDS).unwrap_err().to_string();
        assert!(error.contains("{{.Nope}}") && error.contains("{{.Names}}"), "{error}");
        assert!(OutputFormat::parse(Some("{{.Names"), FIELDS).is_err());
    }
}
