//! docker's process flags shared by `run`/`create` and `service create`:
//! `--cap-add`, `--cap-drop`, `--sysctl`, `--ulimit`, `--init`,
//! `--add-host`. Parsed here so a malformed value is reported before
//! anything is sent; the node's runtime checks what the values mean.

use shoal_proto::pb;

use crate::error::{CliError, CliResult};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProcessFlags {
    /// Add a Linux capability, e.g. NET_ADMIN (ALL for every one)
    #[arg(long = "cap-add", value_name = "CAPABILITY")]
    cap_add: Vec<String>,
    /// Drop a Linux capability, e.g. MKNOD (ALL for every one)
    #[arg(long = "cap-drop", value_name = "CAPABILITY")]
    cap_drop: Vec<String>,
    /// Set a namespaced kernel parameter, e.g. net.core.somaxconn=1024
    #[arg(long = "sysctl", value_name = "KEY=VALUE")]
    sysctls: Vec<String>,
    /// Set a resource limit, e.g. nofile=1024:2048
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    ulimits: Vec<String>,
    /// Run an init as PID 1 that forwards signals and reaps orphans
    #[arg(long)]
    init: bool,
    /// Add a line to /etc/hosts
    #[arg(long = "add-host", value_name = "NAME:ADDRESS")]
    add_hosts: Vec<String>,
}

impl ProcessFlags {
    pub fn to_pb(&self) -> CliResult<pb::ProcessOptions> {
        let sysctls = self
            .sysctls
            .iter()
            .map(|entry| match entry.split_once('=') {
                Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
                _ => Err(CliError::msg(format!("--sysctl {entry:?} is invalid; use KEY=VALUE, e.g. net.core.somaxconn=1024"))),
            })
            .collect::<CliResult<_>>()?;
        let ulimits = self
            .ulimits
            .iter()
            .map(|value| {
                let ulimit = shoal_runtime::container::process_options::parse_ulimit(value).map_err(CliError::msg)?;
                Ok(pb::Ulimit { name: ulimit.name, soft: ulimit.soft, hard: ulimit.hard })
            })
            .collect::<CliResult<_>>()?;
        let extra_hosts = self.add_hosts.iter().map(|entry| parse_host(entry)).collect::<CliResult<_>>()?;
        let options = pb::ProcessOptions {
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            sysctls,
            ulimits,
            init: self.init,
            extra_hosts,
        };
        // The runtime's own checks, here too, so a service with a bad value
        // is refused now rather than its tasks failing on every node.
        shoal_runtime::container::process_options::validate(&shoal_agent::process_options(Some(&options)))
            .map_err(|e| CliError::msg(e.to_string()))?;
        Ok(options)
    }
}

/// `NAME:ADDRESS` or `NAME=ADDRESS` (the form an IPv6 address needs).
pub fn parse_host(entry: &str) -> CliResult<pb::HostEntry> {
    let split = entry.split_once('=').or_else(|| entry.split_once(':'));
    match split {
        Some((name, address)) if !name.is_empty() && address.parse::<std::net::IpAddr>().is_ok() => {
            Ok(pb::HostEntry { name: name.to_string(), address: address.to_string() })
        }
        _ => Err(CliError::msg(format!("--add-host {entry:?} is invalid; use NAME:ADDRESS with an IP address, e.g. db:198.18.0.5"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_the_wire_options() {
        let flags = ProcessFlags {
            cap_add: vec!["NET_ADMIN".into()],
            cap_drop: vec!["MKNOD".into()],
            sysctls: vec!["net.core.somaxconn=1024".into()],
            ulimits: vec!["nofile=1024:2048".into()],
            init: true,
            add_hosts: vec!["db:198.18.0.5".into(), "v6=fd00::1".into()],
        };
        let options = flags.to_pb().unwrap();
        assert_eq!(options.sysctls["net.core.somaxconn"], "1024");
        assert_eq!((options.ulimits[0].soft, options.ulimits[0].hard), (1024, 2048));
        assert_eq!(options.extra_hosts[1].address, "fd00::1");
        assert!(options.init);
    }

    #[test]
    fn malformed_values_name_the_flag() {
        for (flags, named) in [
            (ProcessFlags { sysctls: vec!["nokey".into()], ..Default::default() }, "--sysctl"),
            (ProcessFlags { ulimits: vec!["nofile=x".into()], ..Default::default() }, "--ulimit"),
            (ProcessFlags { add_hosts: vec!["db:not-an-ip".into()], ..Default::default() }, "--add-host"),
        ] {
            let err = flags.to_pb().unwrap_err().to_string();
            assert!(err.contains(named), "{err}");
        }
    }
}
