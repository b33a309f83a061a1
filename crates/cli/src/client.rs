//! How client commands reach a daemon: the local unix socket, or a
//! manager's TCP port with mutual TLS (docker's `-H`, `--tls*` flags and
//! `SHOAL_HOST` / `SHOAL_CERT_PATH` / `SHOAL_TLS_VERIFY`), or a named
//! context (`--context`, `SHOAL_CONTEXT`, `shoal context use`).
//!
//! Precedence, as docker's: `-H` (or `SHOAL_HOST`), then `--context` (or
//! `SHOAL_CONTEXT`), then the context in use, then the local socket. A
//! context that knows several managers tries them in turn, so a remote
//! user keeps working while one manager is down.

use std::path::PathBuf;
use std::time::Duration;

use shoal_proto::tls::{self, ClientTls, Credentials};
use tonic::transport::Channel;

use crate::context::{self, ContextStore};
use crate::error::CliError;

/// Per manager tried, and per call's wait for an answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one manager may stay silent before the next is tried alongside
/// it: a manager whose host is down answers nothing at all.
const CONNECT_STAGGER: Duration = Duration::from_millis(300);
pub const DEFAULT_SOCKET: &str = "unix:///run/shoal/shoal.sock";

#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Daemon to talk to: unix:///PATH or tcp://HOST:PORT [default: unix:///run/shoal/shoal.sock]
    #[arg(short = 'H', long = "host", global = true, env = "SHOAL_HOST")]
    pub host: Option<String>,
    /// Context to use (see `shoal context`); -H wins over it
    #[arg(long, global = true, env = "SHOAL_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
    /// Verify the manager's certificate (always on for tcp://; accepted for docker compatibility)
    #[arg(long, global = true, env = "SHOAL_TLS_VERIFY", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    pub tlsverify: bool,
    /// CA certificate the manager must be signed by
    #[arg(long, global = true, value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,
    /// Client certificate (from `shoal swarm client-bundle`)
    #[arg(long, global = true, value_name = "FILE")]
    pub tlscert: Option<PathBuf>,
    /// Client key
    #[arg(long, global = true, value_name = "FILE")]
    pub tlskey: Option<PathBuf>,
}

/// Where a command connects.
pub enum Target {
    Unix(PathBuf),
    /// The managers to try, in order.
    Tcp(Vec<String>),
}

/// A host as `-H` takes it.
fn parse_host(host: &str) -> Result<Target, CliError> {
    if let Some(path) = host.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(CliError::msg(format!("host {host:?} has no socket path; use unix:///PATH")));
        }
        return Ok(Target::Unix(PathBuf::from(path)));
    }
    if let Some(addr) = host.strip_prefix("tcp://") {
        return Ok(Target::Tcp(vec![with_port(addr)]));
    }
    Err(CliError::msg(format!("host {host:?} is invalid; use unix:///PATH or tcp://HOST:PORT")))
}

fn with_port(addr: &str) -> String {
    let addr = addr.trim_end_matches('/');
    if addr.contains(':') {
        addr.to_string()
    } else {
        format!("{addr}:{}", crate::daemon::DEFAULT_PORT)
    }
}

/// What a command connects to, and with which client certificate.
struct Resolved {
    target: Target,
    /// Where the target came from, for messages.
    from: String,
    /// The context's own TLS files, if it has them.
    context_tls: Option<context::TlsFiles>,
}

impl ConnectArgs {
    /// The local daemon's socket, ignoring contexts: what `shoal daemon`
    /// serves and what only a local command may use.
    pub fn local_socket(&self) -> Result<PathBuf, CliError> {
        match parse_host(self.host.as_deref().unwrap_or(DEFAULT_SOCKET))? {
            Target::Unix(path) => Ok(path),
            Target::Tcp(_) => Err(CliError::msg("the daemon serves its local API on a unix socket; use -H unix:///PATH")),
        }
    }

    fn resolve(&self) -> Result<Resolved, CliError> {
        if let Some(host) = &self.host {
            return Ok(Resolved { target: parse_host(host)?, from: host.clone(), context_tls: None });
        }
        let store = ContextStore::open();
        let name = match (&self.context, &store) {
            (Some(name), _) => name.clone(),
            (None, Ok(store)) => store.current()?,
            (None, Err(_)) => context::DEFAULT.to_string(),
        };
        if name == context::DEFAULT {
            return Ok(Resolved { target: parse_host(DEFAULT_SOCKET)?, from: DEFAULT_SOCKET.into(), context_tls: None });
        }
        let store = store?;
        let found = store.get(&name)?;
        let target = match parse_host(&found.host)? {
            Target::Tcp(first) => {
                let mut managers = first;
                for other in found.managers.iter().map(|m| with_port(m)) {
                    if !managers.contains(&other) {
                        managers.push(other);
                    }
                }
                Target::Tcp(managers)
            }
            unix => unix,
        };
        Ok(Resolved { target, from: format!("context {name:?}"), context_tls: store.tls(&name)? })
    }

    pub fn target(&self) -> Result<Target, CliError> {
        Ok(self.resolve()?.target)
    }

    fn tls_file(&self, explicit: &Option<PathBuf>, name: &str, from: &str) -> Result<PathBuf, CliError> {
        if let Some(path) = explicit {
            return Ok(path.clone());
        }
        if let Ok(dir) = std::env::var("SHOAL_CERT_PATH") {
            return Ok(PathBuf::from(dir).join(name));
        }
        Err(CliError::msg(format!(
            "connecting to {from} needs a client certificate: pass --tlscacert, --tlscert and --tlskey, set SHOAL_CERT_PATH to a directory from `shoal swarm client-bundle`, or use a context"
        )))
    }

    /// The flags' (or SHOAL_CERT_PATH's) files win over a context's own.
    fn credentials(&self, resolved: &Resolved) -> Result<Credentials, CliError> {
        let flags_given = self.tlscacert.is_some() || self.tlscert.is_some() || self.tlskey.is_some();
        if let (Some(tls), false) = (&resolved.context_tls, flags_given) {
            return Ok(Credentials { ca_pem: tls.ca.clone(), cert_pem: tls.cert.clone(), key_pem: tls.key.clone() });
        }
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path)
                .map_err(|e| CliError::msg(format!("cannot read {}: {e}; check the path and its permissions", path.display())))
        };
        Ok(Credentials {
            ca_pem: read(self.tls_file(&self.tlscacert, "ca.pem", &resolved.from)?)?,
            cert_pem: read(self.tls_file(&self.tlscert, "cert.pem", &resolved.from)?)?,
            key_pem: read(self.tls_file(&self.tlskey, "key.pem", &resolved.from)?)?,
        })
    }

    pub async fn connect(&self) -> Result<Channel, CliError> {
        let resolved = self.resolve()?;
        match &resolved.target {
            Target::Unix(path) => tls::connect_unix(path).await.map_err(|_| {
                CliError::msg(format!(
                    "cannot connect to the shoal daemon at unix://{}; is `shoal daemon` running?",
                    path.display()
                ))
            }),
            Target::Tcp(managers) => {
                let credentials = self.credentials(&resolved)?;
                let client_tls = ClientTls::new(&credentials)
                    .map_err(|e| CliError::msg(format!("the TLS files of {} are unusable: {e}", resolved.from)))?;
                let failures = match tls::connect_first(managers, &client_tls, CONNECT_STAGGER, CONNECT_TIMEOUT).await {
                    Ok((_, channel)) => return Ok(channel),
                    Err(failures) => failures,
                };
                let failures: Vec<String> = failures.into_iter().map(|(addr, e)| format!("{addr}: {e}")).collect();
                Err(CliError::msg(match failures.as_slice() {
                    [one] => format!("cannot connect to manager {one}"),
                    _ => format!("cannot connect to any manager of {} ({})", resolved.from, failures.join("; ")),
                }))
            }
        }
    }
}
