//! `shoal secret ...`: docker's secret verbs. A secret's value goes to the
//! managers once, at create; nothing shows it again (`inspect` neither),
//! and only the nodes running a task that uses it receive it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use shoal_proto::pb;

use crate::client::ConnectArgs;
use crate::commands::flags;
use crate::error::{CliError, CliResult};
use crate::output::{ago_rfc3339, print_json, print_table, Format};

/// The managers' limit; checked here too, so a large file is refused
/// before it is sent.
pub const MAX_VALUE_BYTES: usize = 500 * 1024;

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum SecretCommand {
    /// Create a secret from a file ("-" reads standard input)
    Create {
        #[arg(short, long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        name: String,
        file: PathBuf,
    },
    /// List secrets and the services that use them
    Ls {
        /// Only display ids
        #[arg(short, long)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show secrets in detail (JSON; never the value)
    Inspect {
        #[arg(required = true)]
        secrets: Vec<String>,
    },
    /// Remove secrets (refused while a service uses them)
    Rm {
        #[arg(required = true)]
        secrets: Vec<String>,
    },
}

#[derive(Serialize)]
struct SecretJson<'a> {
    id: &'a str,
    name: &'a str,
    labels: BTreeMap<&'a str, &'a str>,
    version: u64,
    created_at: &'a str,
    updated_at: &'a str,
    services: &'a [String],
}

fn to_json(secret: &pb::Secret) -> SecretJson<'_> {
    SecretJson {
        id: &secret.id,
        name: &secret.name,
        labels: secret.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        version: secret.version,
        created_at: &secret.created_at,
        updated_at: &secret.updated_at,
        services: &secret.services,
    }
}

/// A secret's or config's value from `file`, or standard input for `-`:
/// 1 byte to 500 KiB, read as bytes (a trailing newline stays).
pub fn read_value(kind: &str, file: &Path) -> CliResult<Vec<u8>> {
    let from_stdin = file.as_os_str() == "-";
    let source = if from_stdin { "standard input".to_string() } else { file.display().to_string() };
    let mut data = Vec::new();
    let limit = MAX_VALUE_BYTES as u64 + 1;
    let read = if from_stdin {
        std::io::stdin().take(limit).read_to_end(&mut data)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut data))
    };
    read.map_err(|e| CliError::msg(format!("cannot read the {kind} from {source}: {e}")))?;
    if data.is_empty() {
        return Err(CliError::msg(format!("{source} is empty; a {kind} needs a value of 1 byte to 500 KiB")));
    }
    if data.len() > MAX_VALUE_BYTES {
        return Err(CliError::msg(format!("{source} holds more than 500 KiB; a {kind} is limited to 500 KiB")));
    }
    Ok(data)
}

type Control = pb::control_client::ControlClient<tonic::transport::Channel>;

pub async fn run(command: SecretCommand, connect: &ConnectArgs) -> CliResult {
    let control = || async { Ok::<_, CliError>(Control::new(connect.connect().await?)) };
    match command {
        SecretCommand::Create { labels, name, file } => {
            // Flags and the value are checked before dialling.
            let labels = flags::parse_labels("--label", &labels)?;
            let data = read_value("secret", &file)?;
            let secret = control().await?.create_secret(pb::CreateSecretRequest { name, data, labels }).await?.into_inner();
            println!("{}", secret.id);
        }
        SecretCommand::Ls { quiet, format } => {
            let secrets = control().await?.list_secrets(pb::Empty {}).await?.into_inner().secrets;
            if quiet {
                secrets.iter().for_each(|s| println!("{}", s.id));
            } else if format == Format::Json {
                print_json(&secrets.iter().map(to_json).collect::<Vec<_>>())?;
            } else {
                let rows = secrets
                    .iter()
                    .map(|s| vec![s.id.clone(), s.name.clone(), ago_rfc3339(&s.created_at), ago_rfc3339(&s.updated_at), s.services.join(", ")])
                    .collect();
                print_table(&["ID", "NAME", "CREATED", "UPDATED", "SERVICES"], rows);
            }
        }
        SecretCommand::Inspect { secrets } => {
            let mut control = control().await?;
            let mut found = Vec::new();
            for secret in secrets {
                found.push(control.inspect_secret(pb::SecretRef { secret }).await?.into_inner());
            }
            print_json(&found.iter().map(to_json).collect::<Vec<_>>())?;
        }
        SecretCommand::Rm { secrets } => {
            let mut control = control().await?;
            // Like docker: go on after a failure, exit non-zero at the end.
            let mut last_error = None;
            for secret in secrets {
                match control.remove_secret(pb::SecretRef { secret: secret.clone() }).await {
                    Ok(_) => println!("{secret}"),
                    Err(status) => {
                        if let Some(previous) = last_error.replace(CliError::from(status)) {
                            eprintln!("Error: {previous}");
                        }
                    }
                }
            }
            return last_error.map_or(Ok(()), Err);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_as_bytes_and_bounded() {
        let dir = std::env::temp_dir().join(format!("shoal-secret-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        assert_eq!(read_value("secret", &file("ok", b"pw\n")).unwrap(), b"pw\n");
        let error = read_value("secret", &file("empty", b"")).unwrap_err().to_string();
        assert!(error.contains("empty") && error.contains("shoal-secret-cli-test"), "{error}");
        let error = read_value("secret", &file("big", &vec![b'x'; MAX_VALUE_BYTES + 1])).unwrap_err().to_string();
        assert!(error.contains("more than 500 KiB"), "{error}");
        let error = read_value("config", &dir.join("missing")).unwrap_err().to_string();
        assert!(error.starts_with("cannot read the config from"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn times_read_as_docker_shows_them() {
        assert_eq!(ago_rfc3339("not a time"), "not a time");
        assert!(ago_rfc3339("2020-01-01T00:00:00Z").ends_with("days ago"));
    }
}
