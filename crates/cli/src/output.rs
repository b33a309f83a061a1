//! docker-style output: borderless tables by default, `--format json`, `-q`.

use serde::Serialize;
use tabled::builder::Builder;
use tabled::settings::{Padding, Style};

use crate::error::CliResult;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// Prints rows under a header, columns separated like docker's.
pub fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut builder = Builder::default();
    builder.push_record(header.iter().map(|h| h.to_string()));
    for row in rows {
        builder.push_record(row);
    }
    let mut table = builder.build();
    table.with(Style::blank()).with(Padding::new(0, 3, 0, 0));
    let rendered = table.to_string();
    for line in rendered.lines() {
        println!("{}", line.trim_end());
    }
}

pub fn print_json<T: Serialize>(value: &T) -> CliResult {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// "3 seconds ago", "2 minutes ago": docker's relative times.
pub fn ago(unix_secs: i64) -> String {
    if unix_secs <= 0 {
        return "N/A".into();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(unix_secs);
    format!("{} ago", human_duration(now.saturating_sub(unix_secs).max(0) as u64))
}

/// "Less than a second", "5 seconds", "About a minute", "3 hours", ...
pub fn human_duration(secs: u64) -> String {
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".into(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if s < 7200 => "About an hour".into(),
        s if s < 48 * 3600 => format!("{} hours", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

/// An RFC 3339 time as docker's "2 minutes ago" (as given if unreadable).
pub fn ago_rfc3339(rfc3339: &str) -> String {
    humantime::parse_rfc3339_weak(rfc3339.trim_end_matches('Z'))
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| ago(d.as_secs() as i64))
        .unwrap_or_else(|| rfc3339.to_string())
}
