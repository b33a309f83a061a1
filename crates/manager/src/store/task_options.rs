//! A task's process options beyond the basics, as docker's service
//! ContainerSpec has them: capabilities, sysctls, ulimits, an init
//! process, extra /etc/hosts lines, a terminal and an open stdin. The
//! manager only stores and hands them on; the node's runtime checks the
//! values (and refuses a bad one at create, naming it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOptions {
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub sysctls: BTreeMap<String, String>,
    pub ulimits: Vec<Ulimit>,
    pub init: bool,
    /// `(name, address)`.
    pub extra_hosts: Vec<(String, String)>,
    pub tty: bool,
    pub open_stdin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}
