//! `shoal dev-cluster __sim-nodes`: the process of one simulator host. It
//! joins its simulated nodes to the swarm and answers the simulator on its
//! control socket until it is stopped.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shoal_agent::simulation::{PoolConfig, SimulatedBehaviour, SimulatedPool};
use tokio::io::BufReader;
use tokio::net::UnixListener;

use super::control::{read_request, write_reply, Reply, Request};

/// The join token comes in the environment, not on the command line that
/// every process on the machine can read.
pub const TOKEN_ENV: &str = "SHOAL_SIM_JOIN_TOKEN";

#[derive(Debug, clap::Args)]
pub struct SimNodesArgs {
    /// The control socket, unix:///PATH (also what marks the process as this host's).
    #[arg(long)]
    pub control: String,
    /// Managers' HOST:PORT, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub managers: Vec<String>,
    /// The address every simulated node advertises.
    #[arg(long)]
    pub advertise: IpAddr,
    /// Nodes to join at start.
    #[arg(long)]
    pub nodes: usize,
    #[arg(long, value_parser = humantime::parse_duration)]
    pub start_delay: Duration,
    #[arg(long)]
    pub fail_rate: f64,
    /// Joins in flight at once.
    #[arg(long, default_value_t = 32)]
    pub join_concurrency: usize,
}

pub async fn run(args: SimNodesArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .try_init();
    let token = std::env::var(TOKEN_ENV).with_context(|| format!("{TOKEN_ENV} is not set; the simulator passes the join token in it"))?;
    let socket = PathBuf::from(args.control.strip_prefix("unix://").unwrap_or(&args.control));
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).with_context(|| format!("could not listen on {}", socket.display()))?;
    let pool = Arc::new(SimulatedPool::new(PoolConfig {
        managers: args.managers,
        token,
        advertise_ip: args.advertise,
        hostname_prefix: "sim".into(),
        behaviour: SimulatedBehaviour { start_delay: args.start_delay, fail_rate: args.fail_rate },
        join_concurrency: args.join_concurrency,
    }));
    // The first nodes join in the background, so the simulator can watch
    // them come in.
    let joining = pool.clone();
    let nodes = args.nodes;
    tokio::spawn(async move {
        if let Err(error) = joining.grow(nodes).await {
            tracing::error!(%error, "some simulated nodes could not join");
        }
    });
    loop {
        let (stream, _) = listener.accept().await.context("accepting on the control socket")?;
        let pool = pool.clone();
        tokio::spawn(async move {
            let (reader, mut writer) = stream.into_split();
            let mut reader = BufReader::new(reader);
            while let Ok(Some(request)) = read_request(&mut reader).await {
                let reply = answer(&pool, request).await;
                if write_reply(&mut writer, &reply).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn answer(pool: &SimulatedPool, request: Request) -> Reply {
    match request {
        Request::Status => Reply::Status(pool.status()),
        Request::Tasks => Reply::Tasks(pool.running_tasks()),
        Request::Grow { nodes } => match pool.grow(nodes).await {
            Ok(()) => Reply::Grown,
            Err(error) => Reply::Error(error),
        },
        Request::Lose { nodes } => Reply::Lost(pool.lose(nodes)),
    }
}
