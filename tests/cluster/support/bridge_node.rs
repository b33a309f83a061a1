//! A one-node dev cluster for tests of a node's own bridge networks and
//! what runs on them: its single host's address and namespace, a busybox
//! image imported as `localbox:1`, and probes from inside and outside.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{run, Cluster, Output};

pub const HOST: &str = "manager1";
pub const IMAGE: &str = "localbox:1";
/// Applets the tests run inside containers.
pub const APPLETS: [&str; 12] = [
    "sh", "httpd", "wget", "ping", "sleep", "echo", "mkdir", "cat", "true", "hostname", "touch", "head",
];
pub const SETTLE: Duration = Duration::from_secs(10);
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A one-node swarm with a busybox image imported as `localbox:1`.
pub struct Node {
    pub cluster: Cluster,
    pub address: Ipv4Addr,
    pub netns: String,
    pub data: PathBuf,
}

impl Node {
    pub fn up(tag: &str) -> Node {
        let cluster = Cluster::up(tag, 1, 0);
        let host = cluster.host(HOST);
        let node = Node {
            address: host.address,
            netns: host.netns.clone(),
            data: host
                .socket
                .parent()
                .expect("the socket's directory")
                .join("data"),
            cluster,
        };
        import_busybox(&node.cluster, HOST, IMAGE);
        node
    }

    pub fn shoal(&self, args: &[&str]) -> Output {
        self.cluster.shoal(HOST, args)
    }

    /// `shoal run ARGS IMAGE COMMAND...`.
    pub fn run(&self, args: &[&str], command: &[&str]) -> Output {
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        full.push(IMAGE);
        full.extend_from_slice(command);
        self.shoal(&full)
    }

    /// A detached web server answering every path with `marker`.
    pub fn serve(&self, name: &str, args: &[&str], marker: &str) {
        let script = format!(
            "mkdir -p /www && echo {marker} > /www/index.html && exec httpd -f -p 80 -h /www"
        );
        let mut full = vec!["-d", "--name", name];
        full.extend_from_slice(args);
        self.run(&full, &["sh", "-c", &script]).ok();
    }

    /// The container's address on `network`.
    pub fn address_of(&self, container: &str, network: &str) -> Ipv4Addr {
        let inspect: serde_json::Value = self
            .shoal(&["container", "inspect", container])
            .ok()
            .stdout_json();
        let ip = &inspect[0]["network_settings"]["networks"][network]["ip_address"];
        ip.as_str()
            .and_then(|ip| ip.parse().ok())
            .unwrap_or_else(|| panic!("{container} has no address on {network}: {inspect}"))
    }

    pub fn network(&self, name: &str) -> NetworkJson {
        let mut found: Vec<NetworkJson> =
            self.shoal(&["network", "inspect", name]).ok().stdout_json();
        found.remove(0)
    }

    /// This node's own (local-scope) networks; the swarm's `ingress` is
    /// listed too, as in docker, but is not the subject here.
    pub fn network_names(&self) -> Vec<String> {
        let networks: Vec<NetworkJson> = self
            .shoal(&["network", "ls", "-f", "scope=local", "--format", "json"])
            .ok()
            .stdout_json();
        networks.into_iter().map(|n| n.name).collect()
    }

    pub fn container_names(&self) -> Vec<String> {
        let rows: Vec<serde_json::Value> = self
            .shoal(&["container", "ls", "-a", "--format", "json"])
            .ok()
            .stdout_json();
        let mut names: Vec<String> = rows
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// Container sandboxes (network namespaces) the node holds.
    pub fn sandboxes(&self) -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(self.data.join("network/netns"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|n| n.starts_with("ctr-"))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }

    /// `wget -O- URL` from inside the node's namespace.
    pub fn fetch_in_node(&self, url: &str) -> Option<String> {
        let netns = format!("--net=/run/netns/{}", self.netns);
        let out = run(
            "nsenter",
            &[&netns, "wget", "-q", "-T", "3", "-O", "-", url],
            PROBE_TIMEOUT,
        );
        out.success().then(|| out.stdout.trim().to_string())
    }

    /// The node's published-port DNAT rules.
    pub fn nat_rules(&self) -> String {
        let netns = format!("--net=/run/netns/{}", self.netns);
        run(
            "nsenter",
            &[&netns, "nft", "list", "table", "ip", "shoal-nat"],
            PROBE_TIMEOUT,
        )
        .stdout
    }
}

/// `wget -O- URL` from this machine's own namespace.
pub fn fetch(url: &str) -> Option<String> {
    let out = run("wget", &["-q", "-T", "3", "-O", "-", url], PROBE_TIMEOUT);
    out.success().then(|| out.stdout.trim().to_string())
}

#[derive(Debug, Deserialize)]
pub struct NetworkJson {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub scope: String,
    pub subnet: String,
    pub gateway: String,
    pub mtu: u32,
    pub attachments: Vec<AttachmentJson>,
}

#[derive(Debug, Deserialize)]
pub struct AttachmentJson {
    pub kind: String,
    pub name: String,
    pub address: String,
    pub aliases: Vec<String>,
}


/// Imports a busybox root filesystem (the [`APPLETS`] as links) on `host`
/// as `name`: an image without a registry.
pub fn import_busybox(cluster: &Cluster, host: &str, name: &str) {
    let rootfs = tempfile::tempdir().expect("a directory for the image");
    let bin = rootfs.path().join("rootfs/bin");
    std::fs::create_dir_all(&bin).expect("rootfs/bin");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed");
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
    }
    let tar = rootfs.path().join("rootfs.tar");
    let tarred = run(
        "tar",
        &["-C", &rootfs.path().join("rootfs").display().to_string(), "-cf", &tar.display().to_string(), "."],
        super::CLI_TIMEOUT,
    );
    assert!(tarred.success(), "{tarred:?}");
    cluster.shoal(host, &["image", "import", &tar.display().to_string(), name]).ok();
}
