//! Builders of store objects for the manager's unit tests: one place that
//! knows every field, so a new field is added once.

use std::collections::BTreeMap;

use super::*;

/// A cluster object with docker's defaults and the default address pool.
pub fn cluster() -> Cluster {
    Cluster {
        meta: Meta { id: "cluster".into(), ..Default::default() },
        ca_cert_pem: String::new(),
        ca_key_pem: String::new(),
        worker_token_secret: String::new(),
        manager_token_secret: String::new(),
        heartbeat_period_ms: 1000,
        task_history_limit: 5,
        orphan_grace_ms: 500,
        cert_lifetime_secs: 1,
        removed_nodes: Vec::new(),
        default_address_pool: DEFAULT_ADDRESS_POOL.parse().expect("the default pool parses"),
        default_pool_mask_length: DEFAULT_POOL_MASK_LENGTH,
        autolock_key: None,
    }
}

/// A ready, active worker whose hostname is its id.
pub fn node(id: &str) -> Node {
    Node {
        meta: Meta { id: id.into(), ..Default::default() },
        hostname: id.into(),
        role: NodeRole::Worker,
        desired_role: NodeRole::Worker,
        availability: Availability::Active,
        labels: BTreeMap::new(),
        addr: String::new(),
        manager_addr: String::new(),
        status: NodeStatus::Ready,
        manager_reachable: false,
        manager_locked: false,
        cert_expiry: 0,
        description: NodeDescription::default(),
        network_addresses: BTreeMap::new(),
        container_attachments: Vec::new(),
    }
}

/// Slot 1 of `service`, unplaced, in `state`, wanting to run.
pub fn task(id: &str, service: &str, state: TaskState) -> Task {
    Task {
        meta: Meta { id: id.into(), ..Default::default() },
        service_id: service.into(),
        service_name: service.into(),
        slot: 1,
        node_id: String::new(),
        spec: TaskSpec::default(),
        placement: Placement::default(),
        spec_version: 1,
        desired_state: TaskState::Running,
        status: TaskStatus::new(state, 0, state.as_str()),
        attempt: 0,
        not_before_ms: 0,
        final_attempt: false,
        networks: Vec::new(),
        started_ms: 0,
    }
}

/// An overlay network `name` on `subnet` with the subnet's first host as
/// gateway.
pub fn network(id: &str, name: &str, subnet: &str) -> Network {
    let subnet: ipnet::Ipv4Net = subnet.parse().expect("a valid test subnet");
    Network {
        meta: Meta { id: id.into(), ..Default::default() },
        spec: NetworkSpec {
            name: name.into(),
            labels: BTreeMap::new(),
            driver: NetworkDriver::Overlay,
            attachable: false,
            internal: false,
            mtu: None,
            options: BTreeMap::new(),
            ingress: false,
        },
        subnet,
        gateway: subnet.hosts().next().expect("a subnet with hosts"),
    }
}

/// A replicated service of one task running the default task spec.
pub fn service(name: &str) -> Service {
    Service {
        meta: Meta { id: name.into(), ..Default::default() },
        spec: ServiceSpec {
            name: name.into(),
            labels: BTreeMap::new(),
            mode: ServiceMode::Replicated { replicas: 1 },
            task: TaskSpec::default(),
            restart: RestartPolicy::default(),
            placement: Placement::default(),
            endpoint: EndpointSpec::default(),
            update: Default::default(),
            rollback: Default::default(),
            depends_on: Vec::new(),
        },
        spec_version: 1,
        vips: Vec::new(),
        previous_spec: None,
        update_status: None,
    }
}
