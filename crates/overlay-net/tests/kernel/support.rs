//! Throwaway namespaces for the kernel tests. A [`Scratch`] owns a "node"
//! namespace in /run/netns (so `ip -n` can look at it) and a private
//! directory for further namespaces (sandboxes); dropping it, also when a
//! test fails, removes them all, and with them every link, address and route
//! the test made. Leftovers of a killed earlier run are removed first.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use shoal_overlay_net::netns::NetnsDir;

pub struct Scratch {
    pub node_name: String,
    pub node_path: PathBuf,
    /// A private namespace directory (sandboxes, peers).
    pub dir: NetnsDir,
    _tempdir: tempfile::TempDir,
}

impl Scratch {
    /// `tag` must be unique among the tests of this binary.
    pub fn new(tag: &str) -> Scratch {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the kernel tests of shoal-overlay-net need root (CI runs them as root)"
        );
        let prefix = format!("shnl-{tag}-");
        let iproute2 = NetnsDir::iproute2();
        for stale in iproute2.list().expect("list /run/netns") {
            let Some(pid) = stale
                .strip_prefix(&prefix)
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
                let _ = iproute2.delete(&stale);
            }
        }
        let node_name = format!("{prefix}{}", std::process::id());
        let _ = iproute2.delete(&node_name);
        let node_path = iproute2
            .create(&node_name)
            .expect("create the node namespace");
        let tempdir = tempfile::tempdir().expect("temporary directory");
        let dir = NetnsDir::new(tempdir.path().join("netns"));
        Scratch {
            node_name,
            node_path,
            dir,
            _tempdir: tempdir,
        }
    }

    /// A further namespace in the private directory.
    pub fn netns(&self, name: &str) -> PathBuf {
        self.dir.create(name).expect("create a scratch namespace")
    }

    /// `ip -n <node> ARGS` output.
    pub fn ip_node(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.node_name.as_str()];
        full.extend_from_slice(args);
        let out = Command::new("ip").args(&full).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {} failed: {}",
            full.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(names) = self.dir.list() {
            for name in names {
                let _ = self.dir.delete(&name);
            }
        }
        let _ = NetnsDir::iproute2().delete(&self.node_name);
    }
}

/// Runs `program args` inside the namespace at `netns`; stdout on success.
pub fn in_netns(netns: &Path, program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg(program)
        .args(args)
        .output()
        .map_err(|e| format!("could not run nsenter: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {} in {} failed ({}): {}{}",
            args.join(" "),
            netns.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// One ping from `netns` to `address`, waiting at most a second.
pub fn ping(netns: &Path, address: &str) -> Result<(), String> {
    in_netns(netns, "ping", &["-c", "1", "-W", "1", address]).map(drop)
}
