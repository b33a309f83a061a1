//! Who may call what. Every RPC on the manager port names the roles it
//! accepts; the caller's role comes from its certificate, which must be
//! issued by this cluster's CA for this cluster and not revoked by `node rm`.

use shoal_proto::identity::{peer_identity, PeerIdentity, Role};
use tonic::{Request, Status};

use crate::manager::Manager;

/// Where a request came in: the daemon's unix socket is trusted (its file
/// mode restricts it to root), the TCP port is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    LocalSocket,
    Tls,
}

/// Checks the caller against `allowed`. On the local socket the caller is
/// the node's administrator and passes; over TLS it must present a
/// certificate with one of the allowed roles.
pub fn authorize<T>(
    transport: Transport,
    request: &Request<T>,
    manager: &Manager,
    allowed: &[Role],
) -> Result<Option<PeerIdentity>, Status> {
    if transport == Transport::LocalSocket {
        return Ok(None);
    }
    let identity = require_identity(request, manager)?;
    if !allowed.contains(&identity.role) {
        let wanted: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        return Err(Status::permission_denied(format!(
            "a {} certificate cannot use this API (it needs a {} certificate); run the command on a manager or use a client bundle from `shoal swarm client-bundle`",
            identity.role.as_str(),
            wanted.join(" or ")
        )));
    }
    Ok(Some(identity))
}

/// The caller's verified identity, or a refusal saying why there is none.
pub fn require_identity<T>(request: &Request<T>, manager: &Manager) -> Result<PeerIdentity, Status> {
    let identity = peer_identity(request).ok_or_else(|| {
        Status::unauthenticated("this API needs a client certificate signed by the swarm's CA; pass --tlscert and --tlskey (see `shoal swarm client-bundle`)")
    })?;
    if let Some(message) = refusal(&identity, manager) {
        return Err(Status::permission_denied(message));
    }
    Ok(identity)
}

/// Why a certificate-holder may not use this swarm (another swarm's
/// certificate, a removed node), if it may not. Runs on every RPC, Raft's
/// included: it decides under the read lock rather than cloning the
/// cluster object (CA material and all).
pub fn refusal(identity: &PeerIdentity, manager: &Manager) -> Option<String> {
    manager.store.view(|s| {
        let cluster = s.cluster()?;
        if identity.cluster_id != cluster.id() {
            return Some(format!(
                "certificate for {} belongs to swarm {}, not this swarm ({})",
                identity.id,
                identity.cluster_id,
                cluster.id()
            ));
        }
        cluster
            .removed_nodes
            .contains(&identity.id)
            .then(|| format!("node {} was removed from the swarm; join it again with a join token", identity.id))
    })
}
