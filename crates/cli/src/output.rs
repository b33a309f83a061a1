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
