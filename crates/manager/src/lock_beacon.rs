//! How the other managers tell a locked manager from a dead one.
//!
//! A manager restarted under autolock holds its TLS key sealed, so it can
//! take no part in Raft or mTLS until `swarm unlock`. Instead it answers
//! on its manager port with one line, `SHOAL-LOCKED <node id>`, and the
//! leader's [`run`] loop, which asks every manager it does not hear from,
//! shows it as `locked` in `node ls` rather than `unreachable`.
//!
//! The line is not authenticated (the node has no key to sign it with):
//! it only changes what `node ls` prints for a manager that is out of
//! Raft anyway, never who may vote or receive anything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::manager::Manager;
use crate::store::{raft_id_of, Node, NodeRole, Object, Op, Transaction};

const GREETING: &str = "SHOAL-LOCKED ";
/// How often the leader asks the managers it does not hear from.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long one answer may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The locked manager's side: answers on its manager address until
/// dropped (which frees the port for the manager once unlocked).
pub struct LockBeacon {
    task: tokio::task::JoinHandle<()>,
}

impl LockBeacon {
    pub async fn serve(listen: SocketAddr, node_id: String) -> std::io::Result<LockBeacon> {
        let listener = TcpListener::bind(listen).await?;
        let line = format!("{GREETING}{node_id}\n");
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { continue };
                let line = line.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(PROBE_TIMEOUT, stream.write_all(line.as_bytes())).await;
                });
            }
        });
        Ok(LockBeacon { task })
    }
}

impl Drop for LockBeacon {
    fn drop(&mut self) {
        // Aborting drops the listener with the task: the port is free.
        self.task.abort();
    }
}

/// The node id a locked manager at `addr` announces, or `None` when
/// nothing answers there with the greeting.
pub async fn probe(addr: &str) -> Option<String> {
    let ask = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let mut answer = [0u8; 128];
        let mut filled = 0;
        while filled < answer.len() {
            let read = stream.read(&mut answer[filled..]).await.ok()?;
            if read == 0 {
                break;
            }
            filled += read;
            if answer[..filled].contains(&b'\n') {
                break;
            }
        }
        let text = std::str::from_utf8(&answer[..filled]).ok()?;
        text.strip_prefix(GREETING)?.split('\n').next().map(str::to_string)
    };
    tokio::time::timeout(PROBE_TIMEOUT, ask).await.ok().flatten()
}

/// Which of the given managers are locked: the node ids that answered at
/// their manager address with their own id.
async fn locked_among(managers: Vec<(String, String)>) -> Vec<String> {
    let answers = futures::future::join_all(managers.into_iter().map(|(id, addr)| async move {
        (probe(&addr).await.as_deref() == Some(id.as_str())).then_some(id)
    }))
    .await;
    answers.into_iter().flatten().collect()
}

/// The leader's loop: keeps each manager's `manager_locked` true exactly
/// while it is out of Raft and its port says it is locked.
pub async fn run(manager: Arc<Manager>) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (silent, nodes): (Vec<(String, String)>, Vec<Node>) = manager.store.view(|s| {
            let managers: Vec<Node> = s.list_typed::<Node>().filter(|n| n.role == NodeRole::Manager).cloned().collect();
            let silent = managers
                .iter()
                .filter(|n| !raft_id_of(&n.meta.id).is_some_and(|id| manager.hears_from(id)) && !n.manager_addr.is_empty())
                .map(|n| (n.meta.id.clone(), n.manager_addr.clone()))
                .collect();
            (silent, managers)
        });
        let locked = locked_among(silent).await;
        for node in nodes {
            let is_locked = locked.contains(&node.meta.id);
            if node.manager_locked == is_locked {
                continue;
            }
            let mut updated = node.clone();
            updated.manager_locked = is_locked;
            let op = Op::Update { object: Object::Node(updated), expected_version: Some(node.meta.version) };
            // A concurrent edit of the node wins; the next round retries.
            if let Err(e) = manager.write(Transaction::single(op)).await {
                tracing::debug!(error = %e, node = %node.meta.id, "recording whether a manager is locked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_locked_manager_answers_with_its_id_and_frees_its_port_when_dropped() {
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let beacon = LockBeacon::serve(port, "node-abc".into()).await.unwrap();
        assert_eq!(probe(&port.to_string()).await.as_deref(), Some("node-abc"));
        assert_eq!(locked_among(vec![("node-abc".into(), port.to_string())]).await, vec!["node-abc".to_string()]);
        // Another node's id at that address is not this node locked.
        assert!(locked_among(vec![("node-xyz".into(), port.to_string())]).await.is_empty());
        drop(beacon);
        tokio::task::yield_now().await;
        let rebound = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                if let Ok(listener) = TcpListener::bind(port).await {
                    return listener;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(rebound.is_ok(), "the port was not freed");
    }

    #[tokio::test]
    async fn anything_else_on_the_port_is_not_locked() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(b"\x16\x03\x01 not a greeting\n").await;
            }
        });
        assert_eq!(probe(&addr).await, None);
        // Nothing listening at all.
        assert_eq!(probe("127.0.0.1:1").await, None);
    }
}
