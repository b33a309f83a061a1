//! `shoal swarm ...` and `shoal info`.

use std::path::PathBuf;

use shoal_proto::identity::generate_key_and_csr;
use shoal_proto::pb;

use crate::client::{ConnectArgs, Target};
use crate::error::{CliError, CliResult};
use crate::output::{print_json, Format};

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum SwarmCommand {
    /// Create a swarm with this node as its first manager
    Init {
        /// Address other nodes reach this one on: IP[:PORT] (port 4242 by default)
        #[arg(long)]
        advertise_addr: Option<String>,
        /// Address the manager endpoint listens on (default 0.0.0.0 and the advertised port)
        #[arg(long)]
        listen_addr: Option<String>,
        /// Recover a swarm that lost quorum, from this manager's state
        #[arg(long)]
        force_new_cluster: bool,
        /// Node heartbeat period (a node is down after 3 missed)
        #[arg(long, value_parser = humantime::parse_duration)]
        dispatcher_heartbeat: Option<std::time::Duration>,
        /// Lifetime of node certificates (renewed at half-life)
        #[arg(long, value_parser = humantime::parse_duration)]
        cert_expiry: Option<std::time::Duration>,
        /// Ended tasks kept per service slot for `service ps` (default 5)
        #[arg(long, value_name = "N")]
        task_history_limit: Option<u64>,
        /// How long a node must be down before its tasks are started elsewhere (default 500ms)
        #[arg(long, value_parser = humantime::parse_duration)]
        orphan_grace_period: Option<std::time::Duration>,
        /// Address pool that networks get their subnets from (default 100.64.0.0/10)
        #[arg(long, value_name = "CIDR")]
        default_addr_pool: Option<String>,
        /// Prefix length of each network's subnet in the pool (default 24)
        #[arg(long, value_name = "N")]
        default_addr_pool_mask_length: Option<u32>,
        /// UDP port of this node's encrypted data path (WireGuard; default 51820)
        #[arg(long, value_name = "PORT")]
        data_path_port: Option<u16>,
        /// Lock restarted managers until `shoal swarm unlock` is given the unlock key
        #[arg(long)]
        autolock: bool,
    },
    /// Change swarm-wide settings
    Update {
        /// Lock restarted managers until `shoal swarm unlock` is given the unlock key
        #[arg(long, value_name = "true|false", num_args = 0..=1, default_missing_value = "true")]
        autolock: Option<bool>,
    },
    /// Unlock a manager that autolock locked after a restart (reads the key from a prompt or stdin)
    Unlock,
    /// Show (or rotate) the unlock key of an autolocked swarm
    UnlockKey {
        /// Print only the key
        #[arg(short, long)]
        quiet: bool,
        /// Replace the key; running managers switch to the new one at once
        #[arg(long)]
        rotate: bool,
    },
    /// Join a swarm as the token's role
    Join {
        #[arg(long)]
        token: String,
        /// Address other nodes reach this one on: IP[:PORT]
        #[arg(long)]
        advertise_addr: Option<String>,
        /// Address the manager endpoint listens on, if this node becomes a manager
        #[arg(long)]
        listen_addr: Option<String>,
        /// UDP port of this node's encrypted data path (WireGuard; default 51820)
        #[arg(long, value_name = "PORT")]
        data_path_port: Option<u16>,
        /// A manager: HOST[:PORT]
        remote_addr: String,
    },
    /// Leave the swarm
    Leave {
        /// Leave even if this node is a manager
        #[arg(short, long)]
        force: bool,
    },
    /// Show (or rotate) the join token for workers or managers
    JoinToken {
        #[arg(value_parser = ["worker", "manager"])]
        role: String,
        /// Print only the token
        #[arg(short, long)]
        quiet: bool,
        /// Replace the token; the old one stops working at once
        #[arg(long)]
        rotate: bool,
    },
    /// Write ca.pem, cert.pem and key.pem for a remote CLI
    ClientBundle {
        /// Directory to write the files to
        #[arg(long)]
        out: PathBuf,
        /// Name in the client certificate
        #[arg(long, default_value = "client")]
        name: String,
    },
}

pub async fn run(command: SwarmCommand, connect: &ConnectArgs) -> CliResult {
    let channel = connect.connect().await?;
    match command {
        SwarmCommand::Init {
            advertise_addr,
            listen_addr,
            force_new_cluster,
            dispatcher_heartbeat,
            cert_expiry,
            task_history_limit,
            orphan_grace_period,
            default_addr_pool,
            default_addr_pool_mask_length,
            data_path_port,
            autolock,
        } => {
            let mut daemon = pb::daemon_client::DaemonClient::new(channel);
            let reply = daemon
                .swarm_init(pb::SwarmInitRequest {
                    advertise_addr: advertise_addr.clone().unwrap_or_default(),
                    listen_addr: listen_addr.unwrap_or_default(),
                    force_new_cluster,
                    heartbeat_period_ms: dispatcher_heartbeat.map(|d| d.as_millis() as u64).unwrap_or(0),
                    cert_lifetime_secs: cert_expiry.map(|d| d.as_secs().max(1)).unwrap_or(0),
                    task_history_limit,
                    orphan_grace_ms: orphan_grace_period.map(|d| d.as_millis() as u64),
                    default_addr_pool: default_addr_pool.unwrap_or_default(),
                    default_addr_pool_mask_length: default_addr_pool_mask_length.unwrap_or(0),
                    data_path_port: data_path_port.map(u32::from).unwrap_or(0),
                    autolock,
                })
                .await?
                .into_inner();
            let info = daemon.info(pb::Empty {}).await?.into_inner();
            let manager = info.advertise_addr;
            println!("Swarm initialized: current node ({}) is now a manager.\n", reply.node_id);
            println!("To add a worker to this swarm, run the following command:\n");
            println!("    shoal swarm join --token {} {manager}\n", reply.worker_token);
            println!("To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.");
            if !reply.unlock_key.is_empty() {
                println!();
                print_unlock_key(&reply.unlock_key);
            }
        }
        SwarmCommand::Update { autolock } => {
            let reply = pb::daemon_client::DaemonClient::new(channel)
                .swarm_update(pb::SwarmUpdateRequest { autolock })
                .await?
                .into_inner();
            println!("Swarm updated.");
            if !reply.unlock_key.is_empty() {
                print_unlock_key(&reply.unlock_key);
            }
        }
        SwarmCommand::Unlock => {
            let key = read_unlock_key()?;
            pb::daemon_client::DaemonClient::new(channel).swarm_unlock(pb::SwarmUnlockRequest { unlock_key: key }).await?;
            println!("Swarm unlocked.");
        }
        SwarmCommand::UnlockKey { quiet, rotate } => {
            let reply = pb::daemon_client::DaemonClient::new(channel)
                .get_unlock_key(pb::UnlockKeyRequest { rotate })
                .await?
                .into_inner();
            if quiet {
                println!("{}", reply.unlock_key);
            } else {
                if rotate {
                    println!("Successfully rotated manager unlock key.\n");
                }
                print_unlock_key(&reply.unlock_key);
                if rotate {
                    println!("\nKeep the previous key for a while: a manager that was down during this rotation still needs it to unlock.");
                }
            }
        }
        SwarmCommand::Join { token, advertise_addr, listen_addr, data_path_port, remote_addr } => {
            let mut daemon = pb::daemon_client::DaemonClient::new(channel);
            let reply = daemon
                .swarm_join(pb::SwarmJoinRequest {
                    token,
                    remote_addr,
                    advertise_addr: advertise_addr.unwrap_or_default(),
                    listen_addr: listen_addr.unwrap_or_default(),
                    data_path_port: data_path_port.map(u32::from).unwrap_or(0),
                })
                .await?
                .into_inner();
            println!("This node joined a swarm as a {} (node id {}).", reply.role, reply.node_id);
        }
        SwarmCommand::Leave { force } => {
            pb::daemon_client::DaemonClient::new(channel).swarm_leave(pb::SwarmLeaveRequest { force }).await?;
            println!("Node left the swarm.");
        }
        SwarmCommand::JoinToken { role, quiet, rotate } => {
            let reply = pb::control_client::ControlClient::new(channel)
                .get_join_token(pb::JoinTokenRequest { role: role.clone(), rotate })
                .await?
                .into_inner();
            if quiet {
                println!("{}", reply.token);
            } else {
                if rotate {
                    println!("Successfully rotated {role} join token.\n");
                }
                let manager = reply.managers.first().cloned().unwrap_or_default();
                println!("To add a {role} to this swarm, run the following command:\n");
                println!("    shoal swarm join --token {} {manager}\n", reply.token);
            }
        }
        SwarmCommand::ClientBundle { out, name } => {
            if !matches!(connect.target()?, Target::Unix(_)) {
                return Err(CliError::msg("client bundles are issued over a manager's local socket; run this on a manager"));
            }
            let key_and_csr = generate_key_and_csr(&name).map_err(|e| CliError::msg(e.to_string()))?;
            let mut control = pb::control_client::ControlClient::new(channel);
            let reply = control
                .issue_client_certificate(pb::IssueClientCertificateRequest { name, csr_pem: key_and_csr.csr_pem })
                .await?
                .into_inner();
            // The managers' TLS addresses, for a context to try in turn.
            let managers = control
                .get_join_token(pb::JoinTokenRequest { role: "worker".into(), rotate: false })
                .await?
                .into_inner()
                .managers;
            write_bundle(&out, &reply.ca_pem, &reply.cert_pem, &key_and_csr.key_pem, &managers)?;
            println!("Wrote ca.pem, cert.pem, key.pem and managers to {}.", out.display());
            println!("Make a context of them: shoal context create NAME --from-bundle {}", out.display());
            println!("Use them with: shoal -H tcp://MANAGER:4242 --tlsverify --tlscacert {0}/ca.pem --tlscert {0}/cert.pem --tlskey {0}/key.pem node ls", out.display());
        }
    }
    Ok(())
}

fn print_unlock_key(key: &str) {
    println!("To unlock a swarm manager after it restarts, run `shoal swarm unlock` and provide the following key:\n");
    println!("    {key}\n");
    println!("Please remember to store this key in a password manager, since without it you will not be able to restart the manager.");
}

/// The unlock key from a prompt that does not echo (a terminal), or the
/// first line of stdin (a pipe).
fn read_unlock_key() -> CliResult<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let mut line = String::new();
    if stdin.is_terminal() {
        eprint!("Enter unlock key: ");
        std::io::stderr().flush()?;
        let _echo_off = EchoOff::new();
        stdin.lock().read_line(&mut line)?;
    } else {
        stdin.lock().read_line(&mut line)?;
    }
    let key = line.trim().to_string();
    if key.is_empty() {
        return Err(CliError::msg("no unlock key was given; type or pipe the SHLKEY-1-... key that `shoal swarm unlock-key` printed"));
    }
    Ok(key)
}

/// Turns terminal echo off on stdin until dropped.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return EchoOff(None);
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            quiet.c_lflag |= libc::ECHONL;
            if libc::tcsetattr(0, libc::TCSANOW, &quiet) != 0 {
                return EchoOff(None);
            }
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = self.0 {
            // SAFETY: restores the settings read in `new`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &saved);
            }
        }
    }
}

fn write_bundle(out: &std::path::Path, ca: &str, cert: &str, key: &str, managers: &[String]) -> CliResult {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(out).map_err(|e| CliError::msg(format!("cannot create {}: {e}", out.display())))?;
    let managers = managers.iter().map(|m| format!("{m}\n")).collect::<String>();
    for (name, content, mode) in [("ca.pem", ca, 0o644), ("cert.pem", cert, 0o644), ("key.pem", key, 0o600), ("managers", managers.as_str(), 0o644)] {
        let path = out.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| CliError::msg(format!("cannot write {}: {e}", path.display())))?;
        file.write_all(content.as_bytes())?;
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub async fn info(args: InfoArgs, connect: &ConnectArgs) -> CliResult {
    let channel = connect.connect().await?;
    let info = pb::daemon_client::DaemonClient::new(channel).info(pb::Empty {}).await?.into_inner();
    // What the agent holds in memory for its tasks, by id.
    let held = |kind: pb::FileKind| info.files_held.iter().filter(|f| f.kind() == kind).map(|f| f.id.clone()).collect::<Vec<_>>();
    let (secrets, configs) = (held(pb::FileKind::Secret), held(pb::FileKind::Config));
    if args.format == Format::Json {
        return print_json(&serde_json::json!({
            "node_id": info.node_id,
            "hostname": info.hostname,
            "swarm": info.swarm_state,
            "role": info.role,
            "cluster_id": info.cluster_id,
            "managers": info.managers,
            "advertise_addr": info.advertise_addr,
            "is_leader": info.is_leader,
            "secrets_held": secrets,
            "configs_held": configs,
            "engine": info.engine.as_ref().map(|e| serde_json::json!({
                "containers": e.containers,
                "containers_running": e.containers_running,
                "containers_paused": e.containers_paused,
                "containers_stopped": e.containers_stopped,
                "images": e.images,
                "storage_driver": e.storage_driver,
                "cgroup_layout": e.cgroup_layout,
                "server_version": e.server_version,
                "nodes": e.nodes,
            })),
        }));
    }
    if let Some(engine) = &info.engine {
        println!("Containers: {}", engine.containers);
        println!(" Running: {}", engine.containers_running);
        println!(" Paused: {}", engine.containers_paused);
        println!(" Stopped: {}", engine.containers_stopped);
        println!("Images: {}", engine.images);
        println!("Server Version: {}", engine.server_version);
        println!("Storage Driver: {}", engine.storage_driver);
        println!("Cgroup Layout: {}", engine.cgroup_layout);
    }
    println!("Hostname: {}", info.hostname);
    println!("Swarm: {}", info.swarm_state);
    if info.swarm_state == "locked" {
        println!(" NodeID: {}", info.node_id);
        println!(" This manager is locked (autolock); run `shoal swarm unlock` with the swarm's unlock key.");
    }
    if info.swarm_state == "active" {
        println!(" NodeID: {}", info.node_id);
        println!(" Role: {}", info.role);
        println!(" Is Leader: {}", info.is_leader);
        println!(" ClusterID: {}", info.cluster_id);
        println!(" Advertise Address: {}", info.advertise_addr);
        println!(" Managers: {}", info.managers.join(", "));
        if let Some(nodes) = info.engine.as_ref().map(|e| e.nodes).filter(|n| *n > 0) {
            println!(" Nodes: {nodes}");
        }
        println!(" Secrets Held: {}", secrets.len());
        println!(" Configs Held: {}", configs.len());
    }
    Ok(())
}
