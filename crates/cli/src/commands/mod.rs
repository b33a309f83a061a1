//! Client commands, one module per `shoal` noun.

pub mod attach;
pub mod commit;
pub mod compose;
pub mod config;
pub mod container;
pub mod events;
pub mod context;
pub mod container_ls;
pub mod cp;
pub mod exec;
pub mod flags;
pub mod health_flags;
pub mod image;
pub mod login;
pub mod network;
pub mod node;
pub mod process_flags;
pub mod secret;
pub mod service;
pub mod stack;
pub mod stats;
pub mod swarm;
pub mod system;
pub mod terminal;
pub mod volume;
