//! `shoal stack`: applications from compose files on the swarm, as
//! `docker stack` does. The files are read by `crate::compose`.

pub mod convert;
#[cfg(test)]
mod convert_tests;

use std::collections::HashMap;
use std::path::PathBuf;

use crate::compose;
use crate::error::{CliError, CliResult};

#[derive(Debug, clap::Subcommand)]
pub enum StackCommand {
    /// Print the merged compose files with variables substituted
    Config {
        #[command(flatten)]
        files: ComposeFiles,
    },
}

/// `-c FILE` (repeatable, later files override earlier ones) and `--env-file`.
#[derive(Debug, Clone, clap::Args)]
pub struct ComposeFiles {
    /// Compose file; repeat to merge several in order
    #[arg(short = 'c', long = "compose-file", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Variables for the files (default: .env beside the first file)
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
}

impl ComposeFiles {
    /// Loads the files, printing each warning to stderr.
    pub fn load(&self) -> CliResult<compose::Project> {
        let project = compose::load(&compose::LoadOptions {
            files: self.files.clone(),
            env_file: self.env_file.clone(),
            environment: std::env::vars().collect::<HashMap<_, _>>(),
        })
        .map_err(CliError::msg)?;
        for warning in &project.warnings {
            eprintln!("warning: {warning}");
        }
        Ok(project)
    }
}

pub async fn run(command: StackCommand) -> CliResult {
    match command {
        StackCommand::Config { files } => {
            let project = files.load()?;
            let text = serde_yaml_ng::to_string(&project.merged)
                .map_err(|e| CliError::msg(format!("cannot print the merged file: {e}")))?;
            print!("{text}");
            Ok(())
        }
    }
}
