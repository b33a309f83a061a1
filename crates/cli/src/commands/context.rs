//! `shoal context ...`: docker's context verbs over [`crate::context`].

use std::path::{Path, PathBuf};

use crate::context::{self, Context, ContextStore, TlsFiles};
use crate::error::{CliError, CliResult};
use crate::output::{print_json, print_table, Format};

#[derive(Debug, clap::Subcommand)]
pub enum ContextCommand {
    /// Create a context: a manager's address and a client certificate
    Create {
        name: String,
        /// What the context is for
        #[arg(long, default_value = "")]
        description: String,
        /// tcp://MANAGER:PORT, or unix:///PATH (default: the bundle's first manager)
        #[arg(long)]
        host: Option<String>,
        /// A directory from `shoal swarm client-bundle` (ca.pem, cert.pem, key.pem, managers)
        #[arg(long, value_name = "DIR", conflicts_with_all = ["tlscacert", "tlscert", "tlskey"])]
        from_bundle: Option<PathBuf>,
        /// CA certificate the managers are signed by
        #[arg(long, value_name = "FILE")]
        tlscacert: Option<PathBuf>,
        /// Client certificate
        #[arg(long, value_name = "FILE")]
        tlscert: Option<PathBuf>,
        /// Client key
        #[arg(long, value_name = "FILE")]
        tlskey: Option<PathBuf>,
        /// Another manager to try when the host does not answer (HOST:PORT); repeatable
        #[arg(long = "manager", value_name = "HOST:PORT")]
        managers: Vec<String>,
    },
    /// List contexts (the one in use marked with *)
    Ls {
        /// Only names
        #[arg(short, long)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Use a context for every following command
    Use { name: String },
    /// Print the name of the context in use
    Show,
    /// Show contexts in detail (JSON)
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove contexts
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Write a context, certificates included, to a tar file (- for stdout)
    Export { name: String, file: Option<PathBuf> },
    /// Create a context from an export (- for stdin)
    Import { name: String, file: PathBuf },
}

fn read(path: &Path, what: &str) -> CliResult<String> {
    std::fs::read_to_string(path).map_err(|e| {
        CliError::msg(format!("cannot read the {what} {}: {e}; give a readable file", path.display()))
    })
}

/// The bundle's files, and the managers it lists.
fn from_bundle(dir: &Path) -> CliResult<(TlsFiles, Vec<String>)> {
    let tls = TlsFiles {
        ca: read(&dir.join("ca.pem"), "CA certificate")?,
        cert: read(&dir.join("cert.pem"), "client certificate")?,
        key: read(&dir.join("key.pem"), "client key")?,
    };
    // Bundles written before managers were listed have none: fine.
    let managers = std::fs::read_to_string(dir.join("managers"))
        .map(|text| text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    Ok((tls, managers))
}

pub fn run(command: ContextCommand) -> CliResult {
    let store = ContextStore::open()?;
    match command {
        ContextCommand::Create { name, description, host, from_bundle: bundle, tlscacert, tlscert, tlskey, managers } => {
            context::check_name(&name)?;
            let (tls, mut known) = match (bundle, tlscacert, tlscert, tlskey) {
                (Some(dir), ..) => {
                    let (tls, managers) = from_bundle(&dir)?;
                    (Some(tls), managers)
                }
                (None, Some(ca), Some(cert), Some(key)) => (
                    Some(TlsFiles {
                        ca: read(&ca, "CA certificate")?,
                        cert: read(&cert, "client certificate")?,
                        key: read(&key, "client key")?,
                    }),
                    Vec::new(),
                ),
                (None, None, None, None) => (None, Vec::new()),
                _ => return Err(CliError::msg("give all of --tlscacert, --tlscert and --tlskey, or --from-bundle DIR")),
            };
            known.extend(managers);
            let host = match host {
                Some(host) => host,
                None => known.first().map(|m| format!("tcp://{m}")).ok_or_else(|| {
                    CliError::msg("the context needs a manager: give --host tcp://MANAGER:4242 or --from-bundle DIR")
                })?,
            };
            if host.starts_with("tcp://") && tls.is_none() {
                return Err(CliError::msg(format!(
                    "host {host} needs a client certificate; give --from-bundle DIR or --tlscacert, --tlscert and --tlskey"
                )));
            }
            store.create(&Context { name: name.clone(), description, host, managers: known }, tls.as_ref())?;
            println!("{name}");
            Ok(())
        }
        ContextCommand::Ls { quiet, format } => {
            let current = store.current()?;
            let mut contexts = vec![Context {
                name: context::DEFAULT.into(),
                description: "the local daemon".into(),
                host: crate::client::DEFAULT_SOCKET.into(),
                managers: Vec::new(),
            }];
            contexts.extend(store.list()?);
            if quiet {
                contexts.iter().for_each(|c| println!("{}", c.name));
                return Ok(());
            }
            if format == Format::Json {
                let rows: Vec<serde_json::Value> = contexts
                    .iter()
                    .map(|c| serde_json::json!({"name": c.name, "current": c.name == current, "description": c.description, "host": c.host, "managers": c.managers}))
                    .collect();
                return print_json(&rows);
            }
            let rows = contexts
                .iter()
                .map(|c| {
                    let name = if c.name == current { format!("{} *", c.name) } else { c.name.clone() };
                    vec![name, c.description.clone(), c.host.clone(), c.managers.join(",")]
                })
                .collect();
            print_table(&["NAME", "DESCRIPTION", "HOST", "MANAGERS"], rows);
            Ok(())
        }
        ContextCommand::Use { name } => {
            store.set_current(&name)?;
            println!("{name}");
            eprintln!("Current context is now {name:?}");
            Ok(())
        }
        ContextCommand::Show => {
            println!("{}", store.current()?);
            Ok(())
        }
        ContextCommand::Inspect { names } => {
            let mut found = Vec::new();
            for name in names {
                let context = store.get(&name)?;
                let tls = store.tls_dir(&name);
                found.push(serde_json::json!({
                    "name": context.name,
                    "description": context.description,
                    "host": context.host,
                    "managers": context.managers,
                    "tls": tls.is_dir().then(|| tls.display().to_string()),
                }));
            }
            print_json(&found)
        }
        ContextCommand::Rm { names } => {
            for name in names {
                store.remove(&name)?;
                println!("{name}");
            }
            Ok(())
        }
        ContextCommand::Export { name, file } => match file.as_deref().filter(|f| *f != Path::new("-")) {
            None => store.export(&name, std::io::stdout().lock()),
            Some(path) => {
                let file = std::fs::File::create(path).map_err(|e| CliError::msg(format!("cannot write {}: {e}", path.display())))?;
                store.export(&name, file)?;
                eprintln!("Written context {name:?} to {}", path.display());
                Ok(())
            }
        },
        ContextCommand::Import { name, file } => {
            if file == Path::new("-") {
                store.import(&name, std::io::stdin().lock())?;
            } else {
                let input = std::fs::File::open(&file).map_err(|e| CliError::msg(format!("cannot read {}: {e}", file.display())))?;
                store.import(&name, input)?;
            }
            println!("{name}");
            Ok(())
        }
    }
}
