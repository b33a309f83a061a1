//! Network namespaces for root tests, built with the `ip` command: "node"
//! namespaces with bridges, "container" namespaces with a veth on a bridge,
//! and "outside" namespaces over a veth uplink. A [`Lab`] deletes all its
//! namespaces when dropped (also when the test fails), which removes their
//! links and nftables tables with them; leftovers of a killed earlier run
//! with the same prefix are removed first.

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};

pub struct Lab {
    prefix: String,
    namespaces: RefCell<Vec<String>>,
}

/// A namespace of the lab.
#[derive(Clone, Debug)]
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

/// A container namespace with its address on a bridge.
#[derive(Clone, Debug)]
pub struct Container {
    pub ns: Ns,
    pub addr: Ipv4Addr,
    /// The host side of its veth, in the node namespace.
    pub veth: String,
}

impl Lab {
    /// `tag` must be unique among the tests: every namespace is
    /// `shfw-<tag>-<role>`.
    pub fn new(tag: &str) -> Lab {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the firewall's namespace tests need root (CI runs them as root)"
        );
        let lab = Lab {
            prefix: format!("shfw-{tag}-"),
            namespaces: RefCell::new(Vec::new()),
        };
        let listing = run(Command::new("ip").args(["netns", "list"]));
        for line in String::from_utf8_lossy(&listing.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.starts_with(&lab.prefix) {
                let _ = Command::new("ip").args(["netns", "del", name]).output();
            }
        }
        lab
    }

    pub fn netns(&self, role: &str) -> Ns {
        let name = format!("{}{role}", self.prefix);
        ip(&["netns", "add", &name]);
        self.namespaces.borrow_mut().push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Ns { name }
    }

    /// A bridge on `node` carrying `gateway` (address/prefix).
    pub fn bridge(&self, node: &Ns, bridge: &str, gateway: &str) {
        ip(&["-n", &node.name, "link", "add", bridge, "type", "bridge"]);
        ip(&["-n", &node.name, "addr", "add", gateway, "dev", bridge]);
        ip(&["-n", &node.name, "link", "set", bridge, "up"]);
    }

    /// A container namespace `role` with eth0 = `addr` (address/prefix) on
    /// `bridge` of `node` and a default route via `gateway`.
    pub fn container(
        &self,
        node: &Ns,
        bridge: &str,
        role: &str,
        addr: &str,
        gateway: &str,
    ) -> Container {
        let ns = self.netns(role);
        let veth = format!("v{role}");
        ip(&[
            "-n", &node.name, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
            "netns", &ns.name,
        ]);
        ip(&[
            "-n", &node.name, "link", "set", &veth, "master", bridge, "up",
        ]);
        ip(&["-n", &ns.name, "addr", "add", addr, "dev", "eth0"]);
        ip(&["-n", &ns.name, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns.name, "route", "add", "default", "via", gateway]);
        let addr = addr.split('/').next().unwrap().parse().unwrap();
        Container { ns, addr, veth }
    }

    /// A veth `link` between `a` and `b` (same name on both sides) with
    /// the given addresses (address/prefix, or none).
    pub fn link(&self, a: &Ns, a_addr: Option<&str>, b: &Ns, b_addr: Option<&str>, link: &str) {
        ip(&[
            "-n", &a.name, "link", "add", link, "type", "veth", "peer", "name", link, "netns",
            &b.name,
        ]);
        for (ns, addr) in [(a, a_addr), (b, b_addr)] {
            if let Some(addr) = addr {
                ip(&["-n", &ns.name, "addr", "add", addr, "dev", link]);
            }
            ip(&["-n", &ns.name, "link", "set", link, "up"]);
        }
    }

    /// Runs `args` inside `ns` (nsenter: unlike `ip netns exec` it leaves
    /// /sys alone).
    pub fn exec(&self, ns: &Ns, args: &[&str]) -> Output {
        let netns = format!("--net={}", ns.path().display());
        run(Command::new("nsenter").arg(netns).args(args))
    }

    /// Like [`Lab::exec`], and the command must succeed; returns stdout.
    pub fn exec_ok(&self, ns: &Ns, args: &[&str]) -> String {
        let output = self.exec(ns, args);
        assert!(
            output.status.success(),
            "{args:?} in {} failed: {}",
            ns.name,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Whether `from` gets an echo reply from `to`. Two pings, so a first
    /// packet lost to ARP resolution does not count.
    pub fn pings(&self, from: &Ns, to: Ipv4Addr) -> bool {
        let to = to.to_string();
        self.exec(
            from,
            &["ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", &to],
        )
        .status
        .success()
    }

    pub fn sysctl(&self, ns: &Ns, key: &str) -> String {
        self.exec_ok(ns, &["cat", &format!("/proc/sys/{key}")])
            .trim()
            .to_string()
    }

    /// Packets counted by the rule with `comment` in `chain` of `table`.
    pub fn counter(&self, ns: &Ns, family: &str, table: &str, chain: &str, comment: &str) -> u64 {
        let json = self.exec_ok(ns, &["nft", "-j", "list", "chain", family, table, chain]);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let rule = value["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.get("rule"))
            .find(|r| r["comment"] == comment)
            .unwrap_or_else(|| panic!("no rule {comment:?} in {chain}: {json}"));
        rule["expr"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|s| s.get("counter"))
            .and_then(|c| c["packets"].as_u64())
            .unwrap_or_else(|| panic!("rule {comment:?} in {chain} has no counter"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in self.namespaces.borrow().iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

pub fn ip(args: &[&str]) {
    let output = run(Command::new("ip").args(args));
    assert!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("could not run {command:?}: {e}"))
}
