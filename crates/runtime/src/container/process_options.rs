//! Checks and normalises docker's process options (`--cap-add`,
//! `--cap-drop`, `--sysctl`, `--ulimit`, `--add-host`) at create, so a bad
//! value is refused with a sentence naming it instead of failing inside
//! the container's start; and turns them into the capability set, rlimits
//! and hosts file the container gets.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::str::FromStr;

use oci_spec::runtime::Capability;

use super::model::{ProcessOptions, Ulimit};
use super::ContainerError;

/// Docker's default capabilities.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every Linux capability (for `--cap-add ALL`), as of Linux 6.x.
const ALL_CAPABILITIES: [&str; 41] = [
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE", "CHOWN", "DAC_OVERRIDE",
    "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER", "KILL", "LEASE", "LINUX_IMMUTABLE", "MAC_ADMIN",
    "MAC_OVERRIDE", "MKNOD", "NET_ADMIN", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_RAW", "PERFMON", "SETFCAP", "SETGID",
    "SETPCAP", "SETUID", "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE", "SYS_PACCT", "SYS_PTRACE",
    "SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "SYSLOG", "WAKE_ALARM",
];

/// The ulimits docker accepts, with the rlimit each sets.
const ULIMITS: &[(&str, &str)] = &[
    ("core", "RLIMIT_CORE"),
    ("cpu", "RLIMIT_CPU"),
    ("data", "RLIMIT_DATA"),
    ("fsize", "RLIMIT_FSIZE"),
    ("locks", "RLIMIT_LOCKS"),
    ("memlock", "RLIMIT_MEMLOCK"),
    ("msgqueue", "RLIMIT_MSGQUEUE"),
    ("nice", "RLIMIT_NICE"),
    ("nofile", "RLIMIT_NOFILE"),
    ("nproc", "RLIMIT_NPROC"),
    ("rss", "RLIMIT_RSS"),
    ("rtprio", "RLIMIT_RTPRIO"),
    ("rttime", "RLIMIT_RTTIME"),
    ("sigpending", "RLIMIT_SIGPENDING"),
    ("stack", "RLIMIT_STACK"),
];

/// The sysctls a container may set: those its own namespaces scope (IPC,
/// network), as docker allows.
fn namespaced_sysctl(key: &str) -> bool {
    const IPC: [&str; 7] = ["kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax", "kernel.shmmni"];
    IPC.contains(&key) || key == "kernel.shm_rmid_forced" || key.starts_with("fs.mqueue.") || key.starts_with("net.")
}

/// Validates `options`, returning them with capability names as `CAP_X`.
pub fn validate(options: &ProcessOptions) -> Result<ProcessOptions, ContainerError> {
    let invalid = |message: String| Err(ContainerError::InvalidRequest(message));
    let mut checked = options.clone();
    checked.cap_add = normalise_capabilities("--cap-add", &options.cap_add)?;
    checked.cap_drop = normalise_capabilities("--cap-drop", &options.cap_drop)?;
    for (key, value) in &options.sysctls {
        if key.is_empty() || key.contains('/') || key.contains("..") {
            return invalid(format!("--sysctl {key:?} is not a kernel parameter name; write one such as net.core.somaxconn"));
        }
        if !namespaced_sysctl(key) {
            return invalid(format!(
                "--sysctl {key} is not namespaced, so it would change the host; only net.*, fs.mqueue.*, kernel.shm*, kernel.msg* and kernel.sem may be set"
            ));
        }
        if value.contains('\n') {
            return invalid(format!("--sysctl {key} has a line break in its value; give a single line"));
        }
    }
    let mut seen = BTreeSet::new();
    for ulimit in &options.ulimits {
        if rlimit_name(&ulimit.name).is_none() {
            let names: Vec<&str> = ULIMITS.iter().map(|(name, _)| *name).collect();
            return invalid(format!("--ulimit {} is unknown; use one of {}", ulimit.name, names.join(", ")));
        }
        if ulimit.soft > ulimit.hard {
            return invalid(format!(
                "--ulimit {}={}:{} has a soft limit above its hard limit; make soft at most hard",
                ulimit.name, ulimit.soft, ulimit.hard
            ));
        }
        if !seen.insert(&ulimit.name) {
            return invalid(format!("--ulimit {} is given twice; give it once", ulimit.name));
        }
    }
    for (name, address) in &options.extra_hosts {
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '#') {
            return invalid(format!("--add-host {name:?} is not a host name; use NAME:ADDRESS"));
        }
        if IpAddr::from_str(address).is_err() {
            return invalid(format!("--add-host {name}:{address} has an address that is not an IP address; use NAME:ADDRESS"));
        }
    }
    Ok(checked)
}

fn normalise_capabilities(flag: &str, names: &[String]) -> Result<Vec<String>, ContainerError> {
    names
        .iter()
        .map(|name| {
            let upper = name.trim().to_ascii_uppercase();
            if upper == "ALL" {
                return Ok(upper);
            }
            let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
            match Capability::from_str(&full["CAP_".len()..]) {
                Ok(_) => Ok(full),
                Err(_) => Err(ContainerError::InvalidRequest(format!(
                    "{flag} {name} is not a Linux capability; use a name such as NET_ADMIN or SYS_TIME"
                ))),
            }
        })
        .collect()
}

/// The capability set: docker's defaults (or every capability with `ALL`
/// added), plus those added, minus those dropped (`ALL` drops all but the
/// ones added).
pub fn capabilities(options: &ProcessOptions) -> Vec<String> {
    let every = || ALL_CAPABILITIES.iter().map(|c| format!("CAP_{c}")).collect::<BTreeSet<String>>();
    let mut set: BTreeSet<String> = if options.cap_drop.iter().any(|c| c == "ALL") {
        BTreeSet::new()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    };
    if options.cap_add.iter().any(|c| c == "ALL") {
        set.extend(every());
    }
    set.extend(options.cap_add.iter().filter(|c| *c != "ALL").cloned());
    for dropped in options.cap_drop.iter().filter(|c| *c != "ALL") {
        if !options.cap_add.contains(dropped) {
            set.remove(dropped);
        }
    }
    set.into_iter().collect()
}

/// The kernel's name for a docker ulimit.
pub fn rlimit_name(ulimit: &str) -> Option<&'static str> {
    ULIMITS.iter().find(|(name, _)| *name == ulimit).map(|(_, rlimit)| *rlimit)
}

/// The /etc/hosts a container with `--add-host` gets: docker's localhost
/// lines, then the added ones.
pub fn hosts_file(extra_hosts: &[(String, String)]) -> String {
    let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (name, address) in extra_hosts {
        text.push_str(&format!("{address}\t{name}\n"));
    }
    text
}

/// Parses docker's `NAME=SOFT[:HARD]` (`--ulimit nofile=1024:2048`).
pub fn parse_ulimit(value: &str) -> Result<Ulimit, String> {
    let invalid = || format!("--ulimit {value:?} is invalid; use NAME=SOFT[:HARD], e.g. nofile=1024:2048");
    let (name, limits) = value.split_once('=').ok_or_else(invalid)?;
    let number = |text: &str| -> Result<u64, String> {
        match text {
            "-1" | "unlimited" => Ok(u64::MAX),
            _ => text.parse().map_err(|_| invalid()),
        }
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((soft, hard)) => (number(soft)?, number(hard)?),
        None => {
            let limit = number(limits)?;
            (limit, limit)
        }
    };
    Ok(Ulimit { name: name.to_string(), soft, hard })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ProcessOptions {
        ProcessOptions::default()
    }

    #[test]
    fn capabilities_add_and_drop_over_docker_s_defaults() {
        let set = capabilities(&validate(&ProcessOptions { cap_add: vec!["net_admin".into()], cap_drop: vec!["CAP_MKNOD".into()], ..options() }).unwrap());
        assert!(set.contains(&"CAP_NET_ADMIN".to_string()) && !set.contains(&"CAP_MKNOD".to_string()));
        assert!(set.contains(&"CAP_CHOWN".to_string()));
        let only = capabilities(&validate(&ProcessOptions { cap_add: vec!["KILL".into()], cap_drop: vec!["ALL".into()], ..options() }).unwrap());
        assert_eq!(only, ["CAP_KILL"]);
        let all = capabilities(&validate(&ProcessOptions { cap_add: vec!["ALL".into()], ..options() }).unwrap());
        assert!(all.contains(&"CAP_SYS_ADMIN".to_string()) && all.len() > 30);
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let cases = [
            (ProcessOptions { cap_add: vec!["FLY".into()], ..options() }, "FLY"),
            (ProcessOptions { sysctls: [("kernel.hostname".into(), "x".into())].into(), ..options() }, "kernel.hostname"),
            (ProcessOptions { sysctls: [("vm.swappiness".into(), "1".into())].into(), ..options() }, "vm.swappiness"),
            (ProcessOptions { ulimits: vec![Ulimit { name: "files".into(), soft: 1, hard: 1 }], ..options() }, "files"),
            (ProcessOptions { ulimits: vec![Ulimit { name: "nofile".into(), soft: 2, hard: 1 }], ..options() }, "nofile=2:1"),
            (ProcessOptions { extra_hosts: vec![("db".into(), "not-an-ip".into())], ..options() }, "not-an-ip"),
        ];
        for (options, named) in cases {
            let err = validate(&options).unwrap_err().to_string();
            assert!(err.contains(named), "{err}");
        }
        assert!(validate(&ProcessOptions { sysctls: [("net.core.somaxconn".into(), "1024".into()), ("kernel.shmmax".into(), "1".into())].into(), ..options() }).is_ok());
    }

    #[test]
    fn ulimits_parse_as_docker_writes_them() {
        assert_eq!(parse_ulimit("nofile=1024:2048").unwrap(), Ulimit { name: "nofile".into(), soft: 1024, hard: 2048 });
        assert_eq!(parse_ulimit("nproc=512").unwrap(), Ulimit { name: "nproc".into(), soft: 512, hard: 512 });
        assert_eq!(parse_ulimit("core=-1").unwrap().hard, u64::MAX);
        assert!(parse_ulimit("nofile").is_err() && parse_ulimit("nofile=a").is_err());
    }

    #[test]
    fn the_hosts_file_keeps_localhost_and_adds_the_hosts() {
        let text = hosts_file(&[("db".into(), "198.18.0.5".into())]);
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(text.ends_with("198.18.0.5\tdb\n"));
    }
}
