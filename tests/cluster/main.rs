//! Multi-node tests: every test runs its own cluster of network-namespace
//! hosts (see `support`). They need root; run them with
//! `cargo nextest run -p shoal-cli --test cluster` (see .config/nextest.toml).

mod support;

mod devcluster;
use support::swarm_helpers;

mod bad_input;
mod control_plane;
mod autolock;
mod failover;
mod security;
mod renewal;
mod runtime;
mod exec;
mod container_verbs;
mod attach;
mod copy;
mod registry;
mod networks;
mod services;
mod local_networks;
mod dns;
mod routing_mesh;
mod rolling_updates;
mod contexts;
mod deploy_files;
mod secrets;
mod health;
mod process_options;
mod stacks;
mod compose;
mod metrics;
mod events;
mod system;
mod simulator;
