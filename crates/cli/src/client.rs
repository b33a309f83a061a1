//! How client commands reach a daemon: the local unix socket, or a
//! manager's TCP port with mutual TLS (docker's `-H`, `--tls*` flags and
//! `SHOAL_HOST` / `SHOAL_CERT_PATH` / `SHOAL_TLS_VERIFY`).

use std::path::PathBuf;
use std::time::Duration;

use shoal_proto::tls::{self, ClientTls, Credentials};
use tonic::transport::Channel;

use crate::error::CliError;


const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Daemon to talk to: unix:///PATH or tcp://HOST:PORT
    #[arg(short = 'H', long = "host", global = true, env = "SHOAL_HOST", default_value = "unix:///run/shoal/shoal.sock")]
    pub host: String,
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
    Tcp(String),
}

impl ConnectArgs {
    pub fn target(&self) -> Result<Target, CliError> {
        if let Some(path) = self.host.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(CliError::msg(format!("host {:?} has no socket path; use unix:///PATH", self.host)));
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = self.host.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            let addr = if addr.contains(':') { addr.to_string() } else { format!("{addr}:{}", crate::daemon::DEFAULT_PORT) };
            return Ok(Target::Tcp(addr));
        }
        Err(CliError::msg(format!("host {:?} is invalid; use unix:///PATH or tcp://HOST:PORT", self.host)))
    }

    fn tls_file(&self, explicit: &Option<PathBuf>, name: &str) -> Result<PathBuf, CliError> {
        if let Some(path) = explicit {
            return Ok(path.clone());
        }
        if let Ok(dir) = std::env::var("SHOAL_CERT_PATH") {
            return Ok(PathBuf::from(dir).join(name));
        }
        Err(CliError::msg(format!(
            "connecting to {} needs a client certificate: pass --tlscacert, --tlscert and --tlskey, or set SHOAL_CERT_PATH to a directory from `shoal swarm client-bundle`",
            self.host
        )))
    }

    fn credentials(&self) -> Result<Credentials, CliError> {
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path)
                .map_err(|e| CliError::msg(format!("cannot read {}: {e}", path.display())))
        };
        Ok(Credentials {
            ca_pem: read(self.tls_file(&self.tlscacert, "ca.pem")?)?,
            cert_pem: read(self.tls_file(&self.tlscert, "cert.pem")?)?,
            key_pem: read(self.tls_file(&self.tlskey, "key.pem")?)?,
        })
    }

    pub async fn connect(&self) -> Result<Channel, CliError> {
        match self.target()? {
            Target::Unix(path) => tls::connect_unix(&path).await.map_err(|_| {
                CliError::msg(format!(
                    "cannot connect to the shoal daemon at unix://{}; is `shoal daemon` running?",
                    path.display()
                ))
            }),
            Target::Tcp(addr) => {
                let credentials = self.credentials()?;
                let client_tls = ClientTls::new(&credentials)
                    .map_err(|e| CliError::msg(format!("the TLS files are unusable: {e}")))?;
                tls::connect(&addr, &client_tls, CONNECT_TIMEOUT)
                    .await
                    .map_err(|e| CliError::msg(format!("cannot connect to manager {addr}: {e}")))
            }
        }
    }
}
