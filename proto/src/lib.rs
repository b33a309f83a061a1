//! Shoal's wire: everything two Shoal processes need to agree on to talk.
//!
//! - [`pb`]: the gRPC services and messages compiled from `shoal.proto`.
//! - [`join_token`]: the `SHLTKN-1-...` join token format that pins the CA.
//! - [`identity`]: who a certificate belongs to (node id, role, cluster) and
//!   key/CSR generation for nodes and clients.
//! - [`task_state`]: the states a task moves through, shared by managers
//!   and agents.
//! - [`tls`]: mutual-TLS servers and clients, with certificates that can be
//!   swapped at run time when they renew.

pub mod pb {
    tonic::include_proto!("shoal.v1");
}

/// etcd's `KV/Put`, client side only: the control-plane benchmark writes
/// to an etcd cluster with it, in the same run as to Shoal's managers.
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}

pub mod event_stream;
pub mod identity;
pub mod join_token;
pub mod names;
pub mod redacted;
pub mod task_files;
pub mod task_state;
pub mod tls;
