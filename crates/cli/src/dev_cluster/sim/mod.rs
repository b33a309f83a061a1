//! `shoal dev-cluster sim`: the swarm's real managers against many
//! simulated nodes on this machine, measuring what each step costs.
//!
//! The managers are ordinary dev-cluster hosts running `shoal daemon`; the
//! nodes live in one process (`__sim-nodes`, [`nodes_process`]) on a host
//! of its own, each a real agent to the managers (see
//! `shoal_agent::simulation`). The run: join, place a service, lose a
//! share of the nodes, check that every task runs exactly once, report.

pub mod control;
mod fanout;
mod measure;
pub mod nodes_process;
pub mod plot;
mod report;
mod steady;

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::plan::{Role, SWARM_PORT};
use super::state::{ClusterState, HostState};
use super::{create, process, swarm, teardown};
use measure::{ManagerSample, Managers};
pub use report::SimFormat;
use report::SimReport;

/// How long each phase may take before the run gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Name of the cluster the simulator makes (replaced if it exists).
    #[arg(long, default_value = "sim")]
    pub name: String,
    /// Manager hosts, each a real `shoal daemon`.
    #[arg(long, default_value_t = 3)]
    pub managers: u32,
    /// Simulated nodes.
    #[arg(long)]
    pub nodes: usize,
    /// Tasks placed per node: one service of nodes x this replicas.
    #[arg(long, default_value_t = 10)]
    pub tasks_per_node: usize,
    /// How long a simulated container takes to start.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub start_delay: Duration,
    /// The share of starts that fail (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// How often each node heartbeats (the swarm's `--dispatcher-heartbeat`;
    /// a node is down after three missed). Each heartbeat costs the managers
    /// CPU: the report shows how many they handle per second.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub dispatcher_heartbeat: Option<Duration>,
    /// Percent of the nodes lost at once in the churn phase.
    #[arg(long, default_value_t = 10)]
    pub lose_percent: u32,
    /// Leave the cluster running afterwards (remove it with `dev-cluster down --name NAME`).
    #[arg(long)]
    pub keep: bool,
    /// table or json
    #[arg(long, value_enum, default_value = "table")]
    pub format: SimFormat,
    /// Also append the report, as one JSON line, to this file (the source
    /// data of `dev-cluster sim-plot`).
    #[arg(long)]
    pub record: Option<std::path::PathBuf>,
}

pub async fn run(shoal_exe: &Path, args: SimArgs) -> anyhow::Result<()> {
    if args.nodes == 0 {
        bail!("--nodes 0 is invalid: the simulator needs at least one node");
    }
    if !(0.0..=1.0).contains(&args.fail_rate) {
        bail!("--fail-rate {} is invalid: give a share between 0 and 1 (0.01 fails one start in a hundred)", args.fail_rate);
    }
    if args.lose_percent > 90 {
        bail!("--lose-percent {} is invalid: at most 90, so tasks have nodes to move to", args.lose_percent);
    }
    let options = create::UpOptions {
        name: args.name.clone(),
        managers: args.managers,
        workers: 0,
        network_only: false,
        no_swarm: false,
        // Removed by the next `up` of the name if this process dies early.
        owner_pid: Some(std::process::id()),
        init_args: match args.dispatcher_heartbeat {
            Some(period) => vec!["--dispatcher-heartbeat".into(), humantime::format_duration(period).to_string()],
            None => Vec::new(),
        },
    };
    let state = create::up(shoal_exe, &options).await?;
    let outcome = simulate(shoal_exe, state, &args).await;
    if !args.keep {
        teardown::down(&args.name).await?;
    }
    let report = outcome?;
    report.print(args.format)?;
    if let Some(path) = &args.record {
        report.append_to(path)?;
    }
    if !report.exactly_once() {
        bail!("a task ran on more than one node, or the managers' view and the nodes' differ (see the report)");
    }
    Ok(())
}

async fn simulate(shoal_exe: &Path, mut state: ClusterState, args: &SimArgs) -> anyhow::Result<SimReport> {
    let mut managers = Managers::of(&state).await?;
    // Each node holds a connection to a manager: thousands need more
    // descriptors than a daemon's usual soft limit. Raised here, for these
    // daemons only, rather than in every daemon (whose containers inherit it).
    for manager in state.hosts.iter().filter(|h| h.role == Role::Manager) {
        if let Some(pid) = manager.pid {
            let wanted = args.nodes as u64 * 2 + 4096;
            match process::raise_open_files_limit(pid, wanted) {
                Ok(reached) if reached >= wanted => {}
                Ok(reached) => bail!("manager process {pid} may open only {reached} files, and {wanted} are needed; run the simulator as root"),
                Err(e) => bail!("could not raise the open-files limit of manager process {pid} to {wanted}: {e}; run the simulator as root"),
            }
        }
    }
    let host = add_simulator_host(&mut state).await?;
    let token = swarm::join_token(shoal_exe, managers.first_host(), Role::Worker).await?;
    let mut report = SimReport::new(args);
    let before = managers.sample();

    // Join: until the managers count every simulated node ready.
    let started = Instant::now();
    let nodes = start_nodes_process(shoal_exe, &mut state, &host, &token, args)?;
    let socket = host.socket.clone();
    wait_for("the simulated nodes to join", &nodes, || async {
        let status = control::status(&socket).await?;
        Ok(status.joined >= args.nodes)
    })
    .await?;
    let expected = args.nodes + state.hosts.iter().filter(|h| h.role == Role::Manager).count();
    wait_for("the managers to see every node ready", &nodes, || managers.ready_nodes_at_least(expected)).await?;
    report.join = started.elapsed();
    eprintln!("{} nodes ready in {:.2} s; placing {} tasks", args.nodes, report.join.as_secs_f64(), args.nodes * args.tasks_per_node);
    let joined = managers.sample();
    report.join_cost = ManagerSample::per_thousand(&before, &joined, args.nodes);

    // Placement: one service, every replica running on some node.
    let replicas = args.nodes * args.tasks_per_node;
    let started = Instant::now();
    let service = managers.create_service(replicas as u64).await?;
    wait_for("every replica to run", &nodes, || async {
        let running = managers.running_tasks(&service).await?;
        Ok(running >= replicas as u64 && control::status(&socket).await?.running >= replicas as u64)
    })
    .await?;
    report.placement = started.elapsed();
    report.placements_per_second = replicas as f64 / report.placement.as_secs_f64().max(1e-9);
    let placed = managers.sample();
    report.rss_after_placement = placed.rss_bytes.clone();
    report.check_placement = managers.compare(&service, &control::tasks(&socket).await?).await?;
    report.placement_cost = ManagerSample::per_thousand(&joined, &placed, replicas);
    eprintln!("{replicas} tasks running in {:.2} s; measuring the steady state and the network fan-out", report.placement.as_secs_f64());
    report.rss_per_100k_tasks = ManagerSample::per_thousand(&joined, &placed, replicas / 100).rss_bytes;
    report.steady = Some(steady::measure(&managers, state.host(&host.name)?.pid).await?);
    // Its services are removed again before the churn.
    report.fan_out = Some(fanout::measure(&managers, &socket, args.nodes, replicas).await?);

    // Churn: a share of the nodes lost at once, their tasks run elsewhere.
    let lose = args.nodes * args.lose_percent as usize / 100;
    if lose > 0 {
        let started = Instant::now();
        let lost = match control::ask(&socket, &control::Request::Lose { nodes: lose }).await? {
            control::Reply::Lost(ids) => ids,
            other => bail!("the simulated nodes answered {other:?} to losing nodes"),
        };
        report.lost_nodes = lost.len();
        eprintln!("{} nodes lost; waiting for their tasks to run elsewhere", lost.len());
        wait_for("the lost nodes' tasks to run elsewhere", &nodes, || async {
            let running = managers.running_tasks_off(&service, &lost).await?;
            Ok(running >= replicas as u64 && control::status(&socket).await?.running >= replicas as u64)
        })
        .await?;
        report.reschedule = Some(started.elapsed());
        report.check_after_loss = Some(managers.compare(&service, &control::tasks(&socket).await?).await?);
    }
    // Failover: the leader killed, a new one serving writes, every node
    // back in session, still each task once.
    if args.managers >= 3 {
        let leader = managers.leader().await?;
        eprintln!("killing the leader ({})", leader.name);
        let started = Instant::now();
        let tracked = super::daemon::tracked(&leader).context("the leader's daemon is not tracked")?;
        process::stop_all(&[tracked], process::Stop::Kill, super::daemon::STOP_GRACE).await?;
        managers.forget(&leader.name);
        let mut probe = 0;
        wait_for("a new leader to commit a write", &nodes, || {
            probe += 1;
            let name = format!("sim-failover-{probe}");
            let managers = &managers;
            async move { managers.write_succeeds(&name).await }
        })
        .await?;
        report.failover_write = Some(started.elapsed());
        let live = args.nodes - report.lost_nodes;
        wait_for("every live node back in session", &nodes, || async { Ok(managers.ready_workers().await? >= live) }).await?;
        report.failover_sessions = Some(started.elapsed());
        wait_for("every replica to run after the failover", &nodes, || async {
            Ok(managers.running_tasks(&service).await? >= replicas as u64 && control::status(&socket).await?.running >= replicas as u64)
        })
        .await?;
        report.check_after_failover = Some(managers.compare(&service, &control::tasks(&socket).await?).await?);
    }
    report.pool = control::status(&socket).await?;
    report.memory_per_node = measure::rss_of(state.host(&host.name)?.pid).map(|rss| rss / args.nodes as u64);
    Ok(report)
}

/// A host for the simulated nodes: a namespace on the cluster's switch,
/// like any other, without a daemon.
async fn add_simulator_host(state: &mut ClusterState) -> anyhow::Result<HostState> {
    let host = state.next_host(Role::Simulator)?;
    state.hosts.push(host.clone());
    state.save()?;
    create::create_host_network(state, &host).await?;
    Ok(host)
}

/// Starts the simulated nodes' process in `host`'s namespace, logging to
/// the host's log, tracked as its daemon would be (so `down` stops it).
fn start_nodes_process(shoal_exe: &Path, state: &mut ClusterState, host: &HostState, token: &str, args: &SimArgs) -> anyhow::Result<NodesProcess> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&host.log).with_context(|| format!("could not open {}", host.log.display()))?;
    let managers: Vec<String> = state.hosts.iter().filter(|h| h.role == Role::Manager).map(|h| format!("{}:{SWARM_PORT}", h.address)).collect();
    let mut command = process::command_in_netns(&host.netns, shoal_exe)?;
    command
        .args(["dev-cluster", "__sim-nodes", "--control"])
        .arg(host.host_uri())
        .arg("--managers")
        .arg(managers.join(","))
        .arg("--advertise")
        .arg(host.address.to_string())
        .arg("--nodes")
        .arg(args.nodes.to_string())
        .arg("--start-delay")
        .arg(humantime::format_duration(args.start_delay).to_string())
        .arg("--fail-rate")
        .arg(args.fail_rate.to_string())
        .env(nodes_process::TOKEN_ENV, token)
        .current_dir(host.dir())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    process::detach(&mut command);
    let child = command.spawn().with_context(|| format!("could not start the simulated nodes on {}", host.name))?;
    let pid = child.id();
    std::fs::write(host.pid_file(), format!("{pid}\n")).with_context(|| format!("could not write {}", host.pid_file().display()))?;
    state.host_mut(&host.name)?.pid = Some(pid);
    state.save()?;
    Ok(NodesProcess::watch(child, host.log.clone()))
}

/// The simulated nodes' process, reaped when it ends so its exit can be
/// reported instead of waited out.
struct NodesProcess {
    exited: Arc<Mutex<Option<std::process::ExitStatus>>>,
    log: std::path::PathBuf,
}

impl NodesProcess {
    fn watch(mut child: std::process::Child, log: std::path::PathBuf) -> Self {
        let exited = Arc::new(Mutex::new(None));
        let record = exited.clone();
        tokio::task::spawn_blocking(move || {
            if let Ok(status) = child.wait() {
                *record.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
            }
        });
        NodesProcess { exited, log }
    }

    /// An error naming how the process ended, once it has.
    fn check(&self) -> anyhow::Result<()> {
        let Some(status) = *self.exited.lock().unwrap_or_else(|p| p.into_inner()) else { return Ok(()) };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("the simulated nodes' process ended ({status}); last lines of {}:\n{}", self.log.display(), tail.join("\n"))
    }
}

/// Polls `done` until it holds, at most [`PHASE_TIMEOUT`].
async fn wait_for<F, Fut>(what: &str, nodes: &NodesProcess, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut last_error = None;
    loop {
        nodes.check()?;
        match done().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(error) => last_error = Some(error),
        }
        if Instant::now() >= deadline {
            let why = last_error.map(|e| format!(" (last error: {e:#})")).unwrap_or_default();
            bail!("waited {}s for {what}{why}", PHASE_TIMEOUT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
