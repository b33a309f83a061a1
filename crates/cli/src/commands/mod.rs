//! Client commands, one module per `shoal` noun.

pub mod config;
pub mod node;
pub mod swarm;
