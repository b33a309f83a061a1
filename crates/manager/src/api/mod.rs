//! The manager's gRPC services and who may call them.

pub mod assignments;
pub mod auth;
pub mod certificates;
pub mod container_attachments;
pub mod control;
pub mod dispatcher;
pub mod endpoint_pb;
pub mod events_api;
pub mod file_delivery;
pub mod file_refs;
pub mod networks;
pub mod overlay_view;
pub mod raft_frames;
pub mod raft_transport;
pub mod rollout_pb;
pub mod secrets;
pub mod service_directory;
pub mod service_pb;
pub mod services;
pub mod slot;
pub mod stacks;

pub use auth::Transport;
pub use slot::ManagerSlot;
