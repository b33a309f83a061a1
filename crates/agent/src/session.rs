//! The long-lived session with a manager.
//!
//! The agent keeps one session open to some manager, heartbeats through it,
//! and moves to the next manager in its list as soon as heartbeats fail, so a
//! manager's death costs the node about one heartbeat period.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_proto::pb;
use shoal_proto::tls::ClientTls;
use tonic::transport::Channel;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use crate::managers::ManagerDialer;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// What the session learns that the daemon must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The managers' addresses changed; persist them for the next start.
    Managers(Vec<String>),
    /// The role the cluster wants this node to have ("manager"/"worker").
    DesiredRole(String),
    /// The node was removed from the swarm.
    Removed,
}

pub struct SessionConfig {
    pub node_id: String,
    pub tls: ClientTls,
    /// Managers to try, in order; updated from the session itself.
    pub managers: Arc<Mutex<Vec<String>>>,
    /// This node's own manager endpoint, tried first when it has one.
    pub local_manager: Option<String>,
    pub events: mpsc::Sender<SessionEvent>,
    /// Sent with every session, so the managers learn of changes (e.g. new
    /// engine labels) at the next connection.
    pub description: pb::NodeDescription,
}

/// Runs until the task is aborted: connect, heartbeat, fail over, repeat.
pub async fn run_session(config: SessionConfig) {
    let mut dialer = ManagerDialer::new(config.tls.clone(), config.managers.clone(), CONNECT_TIMEOUT)
        .persistent()
        .preferring(config.local_manager.clone());
    loop {
        let (addr, channel) = match dialer.connect().await {
            Ok(connected) => connected,
            // The dialer paces its own attempts: no sleep here.
            Err(error) => {
                tracing::debug!(%error, "no manager reachable for the session");
                continue;
            }
        };
        match session_with(&config, &addr, channel).await {
            Ok(()) => tracing::info!(manager = %addr, "session ended; reconnecting"),
            Err(e) => {
                tracing::debug!(manager = %addr, error = %e, "session failed; trying the next manager");
                dialer.note_failure(&addr);
            }
        }
        tokio::time::sleep(RETRY_DELAY).await;
    }
}

async fn session_with(config: &SessionConfig, addr: &str, channel: Channel) -> Result<(), String> {
    let mut client = pb::dispatcher_client::DispatcherClient::new(channel);
    let mut stream = client
        .session(pb::SessionRequest { node_id: config.node_id.clone(), description: Some(config.description.clone()) })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    tracing::info!(manager = %addr, "session established");
    let mut period = Duration::from_millis(1000);
    let mut heartbeat = tokio::time::interval(period);
    let mut last_role = String::new();
    loop {
        tokio::select! {
            message = stream.next() => {
                let message = match message {
                    Some(Ok(m)) => m,
                    Some(Err(status)) => return Err(status.message().to_string()),
                    None => return Ok(()),
                };
                if message.removed {
                    let _ = config.events.send(SessionEvent::Removed).await;
                    return Ok(());
                }
                if !message.managers.is_empty() {
                    let changed = {
                        let mut managers = config.managers.lock().unwrap_or_else(|p| p.into_inner());
                        let changed = *managers != message.managers;
                        *managers = message.managers.clone();
                        changed
                    };
                    if changed {
                        let _ = config.events.send(SessionEvent::Managers(message.managers.clone())).await;
                    }
                }
                if !message.desired_role.is_empty() && message.desired_role != last_role {
                    last_role = message.desired_role.clone();
                    let _ = config.events.send(SessionEvent::DesiredRole(message.desired_role)).await;
                }
                let wanted = Duration::from_millis(message.heartbeat_period_ms.max(100));
                if wanted != period {
                    period = wanted;
                    heartbeat = tokio::time::interval(period);
                }
            }
            _ = heartbeat.tick() => {
                // A heartbeat that cannot get through within one period means
                // this manager (or its leader) is gone: fail over now.
                let beat = client.heartbeat(pb::HeartbeatRequest { node_id: config.node_id.clone(), ..Default::default() });
                match tokio::time::timeout(period, beat).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                        // No leader at the moment (an election): stay, retry next tick.
                        tracing::debug!(error = %status.message(), "heartbeat not recorded");
                    }
                    Ok(Err(status)) => return Err(status.message().to_string()),
                    Err(_) => return Err(format!("heartbeat to {addr} timed out")),
                }
            }
        }
    }
}
