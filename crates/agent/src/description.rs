//! What this node tells the managers about itself (CPUs, memory, platform,
//! engine labels): the scheduler's input for resources and constraints.

use std::collections::BTreeMap;

use shoal_proto::pb;

/// Describes this machine, with the daemon's `--label` engine labels.
pub fn describe_node(engine_labels: &BTreeMap<String, String>) -> pb::NodeDescription {
    let cores = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
    let memory_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| mem_total_bytes(&text)).unwrap_or(0);
    pb::NodeDescription {
        nano_cpus: cores * 1_000_000_000,
        memory_bytes,
        os: std::env::consts::OS.to_string(),
        arch: docker_arch(std::env::consts::ARCH).to_string(),
        engine_labels: engine_labels.clone().into_iter().collect(),
        // The node's data path is described by whoever set it up.
        wireguard_public_key: String::new(),
        data_path_port: 0,
    }
}

/// `MemTotal:  16318480 kB` from /proc/meminfo, in bytes.
fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    let unit = match fields.next() {
        Some("kB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(unit)
}

/// Rust's architecture names as images (and docker) spell them, so
/// `node.platform.arch==amd64` constraints read as in docker.
fn docker_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// `KEY=VALUE` as given to `shoal daemon --label`; the error is one
/// sentence naming the value.
pub fn parse_engine_label(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((key, label_value)) if !key.is_empty() && !key.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Ok((key.to_string(), label_value.to_string()))
        }
        _ => Err(format!("engine label {value:?} is invalid; use KEY=VALUE with a non-empty key without spaces (e.g. zone=eu)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_bytes() {
        let meminfo = "MemTotal:       16318480 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total_bytes(meminfo), Some(16318480 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_bytes("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn architectures_use_docker_names() {
        assert_eq!(docker_arch("x86_64"), "amd64");
        assert_eq!(docker_arch("aarch64"), "arm64");
        assert_eq!(docker_arch("mips"), "mips");
    }

    #[test]
    fn engine_labels_need_a_key() {
        assert_eq!(parse_engine_label("zone=eu"), Ok(("zone".into(), "eu".into())));
        assert_eq!(parse_engine_label("ssd="), Ok(("ssd".into(), String::new())));
        assert_eq!(parse_engine_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        for bad in ["zone", "=eu", "my zone=eu", ""] {
            let error = parse_engine_label(bad).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
    }

    #[test]
    fn this_machine_is_described() {
        let labels = BTreeMap::from([("zone".to_string(), "eu".to_string())]);
        let description = describe_node(&labels);
        assert!(description.nano_cpus >= 1_000_000_000);
        assert_eq!(description.os, "linux");
        assert_eq!(description.engine_labels.get("zone").map(String::as_str), Some("eu"));
    }
}
