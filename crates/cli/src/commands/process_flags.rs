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

/// `service update`'s flags for the same options, as docker's: lists grow
/// with `--*-add` and shrink with `--*-rm` (by key), `--init` and `--tty`
/// take true or false.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProcessUpdateFlags {
    /// Add a Linux capability
    #[arg(long = "cap-add", value_name = "CAPABILITY")]
    cap_add: Vec<String>,
    /// Drop a Linux capability
    #[arg(long = "cap-drop", value_name = "CAPABILITY")]
    cap_drop: Vec<String>,
    /// Add or change a sysctl
    #[arg(long = "sysctl-add", value_name = "KEY=VALUE")]
    sysctl_add: Vec<String>,
    /// Remove a sysctl
    #[arg(long = "sysctl-rm", value_name = "KEY")]
    sysctl_rm: Vec<String>,
    /// Add or change a ulimit
    #[arg(long = "ulimit-add", value_name = "NAME=SOFT[:HARD]")]
    ulimit_add: Vec<String>,
    /// Remove a ulimit
    #[arg(long = "ulimit-rm", value_name = "NAME")]
    ulimit_rm: Vec<String>,
    /// Add an /etc/hosts line
    #[arg(long = "host-add", value_name = "NAME:ADDRESS")]
    host_add: Vec<String>,
    /// Remove the /etc/hosts lines of a name
    #[arg(long = "host-rm", value_name = "NAME")]
    host_rm: Vec<String>,
    /// Run an init as PID 1 (true or false)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    init: Option<bool>,
    /// Give each task a terminal (true or false)
    #[arg(short, long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    tty: Option<bool>,
}

/// What `service update` changes in the process options, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessChange {
    added: pb::ProcessOptions,
    sysctl_rm: Vec<String>,
    ulimit_rm: Vec<String>,
    host_rm: Vec<String>,
    init: Option<bool>,
    tty: Option<bool>,
}

impl ProcessUpdateFlags {
    pub fn change(&self) -> CliResult<ProcessChange> {
        let added = ProcessFlags {
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            sysctls: self.sysctl_add.clone(),
            ulimits: self.ulimit_add.clone(),
            init: false,
            add_hosts: self.host_add.clone(),
        }
        .to_pb()?;
        Ok(ProcessChange {
            added,
            sysctl_rm: self.sysctl_rm.clone(),
            ulimit_rm: self.ulimit_rm.clone(),
            host_rm: self.host_rm.clone(),
            init: self.init,
            tty: self.tty,
        })
    }
}

impl ProcessChange {
    /// Applies the change to `task`'s options. Adding a capability takes it
    /// off the drop list and the other way round, as in docker.
    pub fn apply(&self, task: &mut pb::TaskSpec) {
        if *self == ProcessChange::default() {
            return;
        }
        let options = task.options.get_or_insert_with(Default::default);
        let added = &self.added;
        options.cap_drop.retain(|c| !added.cap_add.iter().any(|a| a.eq_ignore_ascii_case(c)));
        options.cap_add.retain(|c| !added.cap_drop.iter().any(|d| d.eq_ignore_ascii_case(c)));
        for (list, new) in [(&mut options.cap_add, &added.cap_add), (&mut options.cap_drop, &added.cap_drop)] {
            for capability in new {
                if !list.iter().any(|c| c.eq_ignore_ascii_case(capability)) {
                    list.push(capability.clone());
                }
            }
        }
        for key in &self.sysctl_rm {
            options.sysctls.remove(key);
        }
        options.sysctls.extend(added.sysctls.clone());
        options.ulimits.retain(|u| !self.ulimit_rm.contains(&u.name) && !added.ulimits.iter().any(|a| a.name == u.name));
        options.ulimits.extend(added.ulimits.iter().cloned());
        options.extra_hosts.retain(|h| !self.host_rm.contains(&h.name));
        options.extra_hosts.extend(added.extra_hosts.iter().cloned());
        if let Some(init) = self.init {
            options.init = init;
        }
        if let Some(tty) = self.tty {
            task.tty = tty;
        }
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
    fn update_flags_add_and_remove_by_key() {
        let mut task = pb::TaskSpec { options: Some(ProcessFlags {
            cap_add: vec!["NET_ADMIN".into()],
            sysctls: vec!["net.core.somaxconn=1024".into()],
            ulimits: vec!["nofile=10:20".into()],
            add_hosts: vec!["db:198.18.0.5".into()],
            ..Default::default()
        }.to_pb().unwrap()), ..Default::default() };
        let change = ProcessUpdateFlags {
            cap_drop: vec!["NET_ADMIN".into()],
            sysctl_rm: vec!["net.core.somaxconn".into()],
            ulimit_add: vec!["nofile=30:40".into()],
            host_rm: vec!["db".into()],
            host_add: vec!["cache:198.18.0.6".into()],
            init: Some(true),
            tty: Some(true),
            ..Default::default()
        }
        .change()
        .unwrap();
        change.apply(&mut task);
        let options = task.options.unwrap();
        assert!(options.cap_add.is_empty() && options.cap_drop == ["NET_ADMIN"]);
        assert!(options.sysctls.is_empty());
        assert_eq!((options.ulimits.len(), options.ulimits[0].soft), (1, 30));
        assert_eq!(options.extra_hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["cache"]);
        assert!(options.init && task.tty);
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
