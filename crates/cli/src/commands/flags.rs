//! Parsers for the value syntaxes docker's flags use (`64m`, `0.5`,
//! `type=bind,source=...,target=...`, `KEY=VALUE`), shared by `container
//! run` and `service create`. They run in the CLI so a typo is reported
//! before anything reaches the daemon.

use std::collections::HashMap;

use shoal_proto::pb;

use crate::error::{CliError, CliResult};

/// `64m`, `1g`, `512k`, `1048576`, `1.5g`: bytes, with docker's binary units.
pub fn parse_bytes(flag: &str, value: &str) -> CliResult<u64> {
    let invalid = || CliError::msg(format!("{flag} {value:?} is invalid; use a size such as 64m, 512k or 2g"));
    let lower = value.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (number, unit) = match lower.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((at, _)) => lower.split_at(at),
        None => (lower, ""),
    };
    let multiplier: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(invalid()),
    };
    let number: f64 = number.parse().map_err(|_| invalid())?;
    if !number.is_finite() || number <= 0.0 {
        return Err(invalid());
    }
    let bytes = number * multiplier as f64;
    if bytes > u64::MAX as f64 || bytes < 1.0 {
        return Err(invalid());
    }
    Ok(bytes as u64)
}

/// `--cpus 0.5` as nano-CPUs, the unit docker's API uses.
pub fn parse_cpus(flag: &str, value: &str) -> CliResult<u64> {
    let invalid = || CliError::msg(format!("{flag} {value:?} is invalid; use a positive number of CPUs such as 0.5 or 2"));
    let cpus: f64 = value.trim().parse().map_err(|_| invalid())?;
    if !cpus.is_finite() || cpus <= 0.0 || cpus > 1024.0 {
        return Err(invalid());
    }
    let nanos = (cpus * 1e9).round() as u64;
    if nanos < 10_000_000 {
        return Err(CliError::msg(format!("{flag} {value:?} is too small; the minimum is 0.01")));
    }
    Ok(nanos)
}

/// `KEY=VALUE` pairs (labels); a bare `KEY` means an empty value, as in docker.
pub fn parse_labels(flag: &str, values: &[String]) -> CliResult<HashMap<String, String>> {
    values
        .iter()
        .map(|item| {
            let (key, value) = item.split_once('=').unwrap_or((item.as_str(), ""));
            if key.is_empty() {
                return Err(CliError::msg(format!("{flag} {item:?} is invalid; use KEY=VALUE")));
            }
            Ok((key.to_string(), value.to_string()))
        })
        .collect()
}

/// `-e KEY=VALUE`; a bare `KEY` takes the value from the CLI's environment
/// (and is dropped when unset), as docker does.
pub fn parse_env(values: &[String]) -> CliResult<Vec<String>> {
    let mut env = Vec::new();
    for item in values {
        match item.split_once('=') {
            Some(("", _)) => return Err(CliError::msg(format!("environment variable {item:?} is invalid; use KEY=VALUE"))),
            Some(_) => env.push(item.clone()),
            None if item.is_empty() => return Err(CliError::msg("an empty environment variable was given; use -e KEY=VALUE")),
            None => {
                if let Ok(value) = std::env::var(item) {
                    env.push(format!("{item}={value}"));
                }
            }
        }
    }
    Ok(env)
}

/// docker's `--mount type=bind|volume|tmpfs,source=...,target=...[,readonly][,tmpfs-size=64m][,tmpfs-mode=1777]`.
pub fn parse_mount(value: &str) -> CliResult<pb::Mount> {
    let invalid = |why: &str| CliError::msg(format!("mount {value:?} is invalid: {why}"));
    let mut mount = pb::Mount { r#type: "volume".into(), ..Default::default() };
    for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (field, None),
        };
        match (key, val) {
            ("type", Some(t)) => mount.r#type = t.to_string(),
            ("source" | "src", Some(s)) => mount.source = s.to_string(),
            ("target" | "destination" | "dst", Some(t)) => mount.target = t.to_string(),
            ("readonly" | "ro", None) => mount.readonly = true,
            ("readonly" | "ro", Some(v)) => {
                mount.readonly = match v {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(invalid("readonly takes true or false")),
                }
            }
            ("tmpfs-size", Some(s)) => mount.tmpfs_size = parse_bytes("tmpfs-size", s)?,
            ("tmpfs-mode", Some(m)) => {
                mount.tmpfs_mode = u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| invalid("tmpfs-mode takes an octal mode such as 1777"))?
            }
            _ => return Err(invalid(&format!("unknown field {field:?}; use type, source, target, readonly, tmpfs-size or tmpfs-mode"))),
        }
    }
    match mount.r#type.as_str() {
        "bind" | "volume" | "tmpfs" => {}
        other => return Err(invalid(&format!("type {other:?} is unknown; use bind, volume or tmpfs"))),
    }
    if mount.target.is_empty() || !mount.target.starts_with('/') {
        return Err(invalid("target must be an absolute path inside the container"));
    }
    match mount.r#type.as_str() {
        "bind" if !mount.source.starts_with('/') => return Err(invalid("a bind mount needs an absolute source path on the host")),
        "tmpfs" if !mount.source.is_empty() => return Err(invalid("a tmpfs mount takes no source")),
        "bind" | "volume" if mount.tmpfs_size != 0 || mount.tmpfs_mode != 0 => {
            return Err(invalid("tmpfs-size and tmpfs-mode only apply to type=tmpfs"))
        }
        "volume" if mount.source.contains('/') => {
            return Err(invalid("a volume name cannot contain '/'; use type=bind for host paths"))
        }
        _ => {}
    }
    Ok(mount)
}

/// docker's `-v` short form: `NAME:/path` (a named volume, made if
/// missing), `/host/path:/path` (a bind mount), `/path` (an anonymous
/// volume), each optionally `:ro` or `:rw`.
pub fn parse_volume(value: &str) -> CliResult<pb::Mount> {
    let invalid = |why: &str| CliError::msg(format!("volume {value:?} is invalid: {why}"));
    let parts: Vec<&str> = value.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [target] => ("", *target, None),
        [source, target] if target.starts_with('/') => (*source, *target, None),
        [target, mode] => ("", *target, Some(*mode)),
        [source, target, mode] => (*source, *target, Some(*mode)),
        _ => return Err(invalid("use SOURCE:TARGET[:ro], e.g. data:/var/lib/data or /srv/www:/www:ro")),
    };
    let readonly = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(other) => return Err(invalid(&format!("mode {other:?} is unknown; use ro or rw"))),
    };
    if !target.starts_with('/') {
        return Err(invalid("the target must be an absolute path inside the container"));
    }
    let r#type = if source.starts_with('/') { "bind" } else { "volume" };
    if r#type == "volume" && source.contains('/') {
        return Err(invalid("a volume name cannot contain '/'; give a host path starting with / to bind-mount it"));
    }
    Ok(pb::Mount { r#type: r#type.into(), source: source.into(), target: target.into(), readonly, ..Default::default() })
}

/// docker's `--since` / `--until` times: RFC 3339 (`2026-12-06T10:00:00Z`),
/// Unix seconds (`1765015200`, `1765015200.5`) or a duration ago (`10m`);
/// in Unix nanoseconds.
pub fn parse_time(flag: &str, value: &str) -> CliResult<i64> {
    let now = std::time::SystemTime::now();
    let nanos = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0);
    if let Ok(time) = humantime::parse_rfc3339_weak(value.trim_end_matches('Z')) {
        return Ok(nanos(time));
    }
    if let Ok(seconds) = value.parse::<f64>() {
        if seconds >= 0.0 {
            return Ok((seconds * 1e9) as i64);
        }
    }
    let ago = parse_duration(flag, value).map_err(|_| {
        CliError::msg(format!("{flag} {value:?} is not a time; use RFC 3339 (2026-12-06T10:00:00Z), Unix seconds, or a duration ago such as 10m"))
    })?;
    Ok(nanos(now.checked_sub(ago).unwrap_or(std::time::UNIX_EPOCH)))
}

/// docker's durations, in Go's syntax: `5s`, `1m30s`, `500ms`, `1.5h`; a
/// bare `0` is zero.
pub fn parse_duration(flag: &str, value: &str) -> CliResult<std::time::Duration> {
    let invalid = || CliError::msg(format!("{flag} {value:?} is invalid; use a duration such as 5s, 1m30s or 500ms"));
    let text = value.trim();
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if text.is_empty() {
        return Err(invalid());
    }
    let mut nanos = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if number_end == 0 {
            return Err(invalid());
        }
        let number: f64 = rest[..number_end].parse().map_err(|_| invalid())?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        nanos += number * scale;
        rest = &rest[unit_end..];
    }
    if !nanos.is_finite() || nanos >= u64::MAX as f64 {
        return Err(invalid());
    }
    Ok(std::time::Duration::from_nanos(nanos as u64))
}

/// A count such as `--replicas 3`: a whole number, 0 or more.
pub fn parse_count(flag: &str, value: &str) -> CliResult<u64> {
    let text = value.trim();
    if text.starts_with('+') {
        return Err(CliError::msg(format!("{flag} {value:?} is invalid; use a whole number of 0 or more")));
    }
    text.parse::<u64>().map_err(|_| CliError::msg(format!("{flag} {value:?} is invalid; use a whole number of 0 or more")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_ports_read_as_docker_writes_them() {
        let p = parse_publish("8088:80").unwrap();
        assert_eq!((p.host_ip.as_str(), p.host_port, p.container_port, p.protocol()), ("", 8088, 80, pb::PortProtocol::Tcp));
        let p = parse_publish("127.0.0.1:8088:80/udp").unwrap();
        assert_eq!((p.host_ip.as_str(), p.protocol()), ("127.0.0.1", pb::PortProtocol::Udp));
        for bad in ["80", "x:80", "8080:80/sctp", "localhost:1:2", "0:80", "1:2:3:4"] {
            let error = parse_publish(bad).unwrap_err().to_string();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(parse_bytes("--memory", "64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("--memory", "64MB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("--memory", "1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("--memory", "4096").unwrap(), 4096);
        for bad in ["", "m", "-1m", "12x", "0", "nan", "1e400"] {
            let err = parse_bytes("--memory", bad).unwrap_err().to_string();
            assert!(err.contains("--memory") && err.contains("64m"), "{bad}: {err}");
        }
    }

    #[test]
    fn cpus_become_nano_cpus() {
        assert_eq!(parse_cpus("--cpus", "0.5").unwrap(), 500_000_000);
        assert_eq!(parse_cpus("--cpus", "2").unwrap(), 2_000_000_000);
        for bad in ["", "half", "-1", "0", "inf"] {
            assert!(parse_cpus("--cpus", bad).is_err(), "{bad}");
        }
        assert!(parse_cpus("--cpus", "0.001").unwrap_err().to_string().contains("minimum"));
    }

    #[test]
    fn mounts_parse_like_docker() {
        let m = parse_mount("type=bind,source=/srv,target=/data,readonly").unwrap();
        assert_eq!((m.r#type.as_str(), m.source.as_str(), m.target.as_str(), m.readonly), ("bind", "/srv", "/data", true));
        let m = parse_mount("type=tmpfs,target=/scratch,tmpfs-size=16m,tmpfs-mode=1770").unwrap();
        assert_eq!((m.tmpfs_size, m.tmpfs_mode), (16 << 20, 0o1770));
        let m = parse_mount("source=cache,target=/cache").unwrap();
        assert_eq!(m.r#type, "volume");
        for bad in [
            "type=nfs,target=/x",
            "type=bind,source=relative,target=/x",
            "type=bind,source=/x",
            "type=tmpfs,source=/x,target=/y",
            "type=volume,source=a/b,target=/y",
            "type=tmpfs,target=/y,tmpfs-mode=999",
            "type=bind,source=/a,target=/b,colour=red",
        ] {
            let err = parse_mount(bad).unwrap_err().to_string();
            assert!(err.starts_with("mount \""), "{bad}: {err}");
        }
    }

    #[test]
    fn env_and_labels() {
        assert_eq!(parse_env(&["A=1".into()]).unwrap(), vec!["A=1"]);
        assert!(parse_env(&["=1".into()]).is_err());
        assert!(parse_labels("--label", &["=x".into()]).is_err());
        assert_eq!(parse_time("--since", "1765015200").unwrap(), 1_765_015_200_000_000_000);
        assert_eq!(parse_time("--since", "2025-12-06T10:00:00Z").unwrap(), 1_765_015_200_000_000_000);
        let ten_minutes_ago = parse_time("--since", "10m").unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
        assert!((now - ten_minutes_ago - 600_000_000_000).abs() < 5_000_000_000);
        assert!(parse_time("--until", "yesterday").is_err());
        let named = parse_volume("data:/var/lib/data").unwrap();
        assert_eq!((named.r#type.as_str(), named.source.as_str(), named.target.as_str(), named.readonly), ("volume", "data", "/var/lib/data", false));
        let bind = parse_volume("/srv/www:/www:ro").unwrap();
        assert_eq!((bind.r#type.as_str(), bind.source.as_str(), bind.readonly), ("bind", "/srv/www", true));
        let anonymous = parse_volume("/cache").unwrap();
        assert_eq!((anonymous.r#type.as_str(), anonymous.source.as_str()), ("volume", ""));
        for bad in ["a/b:/x", "data:x", "data:/x:rx", "a:b:c:d"] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_labels("--label", &["k".into()]).unwrap()["k"], "");
    }

    #[test]
    fn durations_read_like_docker() {
        use std::time::Duration;
        assert_eq!(parse_duration("--restart-delay", "5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("--restart-delay", "1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("--restart-delay", "500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("--restart-delay", "1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("--restart-delay", "0").unwrap(), Duration::ZERO);
        for bad in ["", "5", "-5s", "5x", "s", "1m30", "five seconds"] {
            let err = parse_duration("--restart-delay", bad).unwrap_err().to_string();
            assert!(err.starts_with("--restart-delay \"") && err.contains("1m30s"), "{bad}: {err}");
        }
    }

    #[test]
    fn counts_are_whole_numbers() {
        assert_eq!(parse_count("--replicas", "3").unwrap(), 3);
        assert_eq!(parse_count("--replicas", "0").unwrap(), 0);
        for bad in ["-1", "lots", "1.5", "", "+2"] {
            let err = parse_count("--replicas", bad).unwrap_err().to_string();
            assert_eq!(err, format!("--replicas {bad:?} is invalid; use a whole number of 0 or more"));
        }
    }
}

/// `--network NAME` or docker's long form `--network name=NAME,alias=A,alias=B`.
pub fn parse_network(flag: &str, value: &str) -> CliResult<pb::NetworkAttachmentConfig> {
    let value = value.trim();
    if !value.contains('=') {
        if value.is_empty() || value.contains(',') {
            return Err(CliError::msg(format!("{flag} {value:?} is invalid; give a network name, or name=NAME,alias=ALIAS")));
        }
        return Ok(pb::NetworkAttachmentConfig { target: value.to_string(), ..Default::default() });
    }
    let mut attachment = pb::NetworkAttachmentConfig::default();
    for field in value.split(',') {
        match field.split_once('=') {
            Some(("name" | "target", name)) if !name.is_empty() => attachment.target = name.to_string(),
            Some(("alias", alias)) if !alias.is_empty() => attachment.aliases.push(alias.to_string()),
            _ => {
                return Err(CliError::msg(format!(
                    "{flag} {value:?} has the field {field:?}, which is invalid; use name=NAME and alias=ALIAS"
                )))
            }
        }
    }
    if attachment.target.is_empty() {
        return Err(CliError::msg(format!("{flag} {value:?} names no network; add name=NAME")));
    }
    Ok(attachment)
}

/// docker's `-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]`.
pub fn parse_publish(value: &str) -> CliResult<pb::PublishedPort> {
    let invalid = || {
        CliError::msg(format!(
            "--publish {value:?} is invalid; use [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], e.g. 8080:80 or 127.0.0.1:8080:80/tcp"
        ))
    };
    let (ports, protocol) = match value.rsplit_once('/') {
        Some((ports, "tcp")) => (ports, pb::PortProtocol::Tcp),
        Some((ports, "udp")) => (ports, pb::PortProtocol::Udp),
        Some(_) => return Err(invalid()),
        None => (value, pb::PortProtocol::Tcp),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (host_ip, host_port, container_port) = match parts.as_slice() {
        [host, container] => ("", *host, *container),
        [ip, host, container] => (*ip, *host, *container),
        _ => return Err(invalid()),
    };
    if !host_ip.is_empty() && host_ip.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(invalid());
    }
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0).map(u32::from);
    Ok(pb::PublishedPort {
        protocol: protocol.into(),
        host_ip: host_ip.to_string(),
        host_port: port(host_port).ok_or_else(invalid)?,
        container_port: port(container_port).ok_or_else(invalid)?,
    })
}

/// A service's `-p PUBLISHED:TARGET[/udp]` or `--publish published=P,
/// target=T[,protocol=tcp|udp][,mode=ingress|host]`.
pub fn parse_service_publish(flag: &str, value: &str) -> CliResult<pb::PortConfig> {
    let invalid = |why: &str| {
        CliError::msg(format!(
            "{flag} {value:?} is invalid ({why}); use PUBLISHED:TARGET[/udp] or published=P,target=T[,protocol=udp][,mode=host]"
        ))
    };
    let port = |text: &str, what: &str| -> CliResult<u32> {
        text.parse::<u16>().ok().filter(|p| *p > 0).map(u32::from).ok_or_else(|| invalid(&format!("{what} {text:?} is not a port from 1 to 65535")))
    };
    let mut config = pb::PortConfig { protocol: pb::PortProtocol::Tcp.into(), publish_mode: pb::PublishMode::Ingress.into(), ..Default::default() };
    if value.contains('=') {
        for field in value.split(',') {
            match field.split_once('=') {
                Some(("published", p)) => config.published_port = port(p, "published port")?,
                Some(("target", p)) => config.target_port = port(p, "target port")?,
                Some(("protocol", "tcp")) => config.protocol = pb::PortProtocol::Tcp.into(),
                Some(("protocol", "udp")) => config.protocol = pb::PortProtocol::Udp.into(),
                Some(("mode", "ingress")) => config.publish_mode = pb::PublishMode::Ingress.into(),
                Some(("mode", "host")) => config.publish_mode = pb::PublishMode::Host.into(),
                _ => return Err(invalid(&format!("the field {field:?} is unknown or has a bad value"))),
            }
        }
        if config.target_port == 0 {
            return Err(invalid("it has no target"));
        }
        return Ok(config);
    }
    let (ports, protocol) = match value.rsplit_once('/') {
        Some((ports, "tcp")) => (ports, pb::PortProtocol::Tcp),
        Some((ports, "udp")) => (ports, pb::PortProtocol::Udp),
        Some((_, other)) => return Err(invalid(&format!("protocol {other:?} is unknown"))),
        None => (value, pb::PortProtocol::Tcp),
    };
    let (published, target) = ports.split_once(':').ok_or_else(|| invalid("it has no PUBLISHED:TARGET"))?;
    config.published_port = port(published, "published port")?;
    config.target_port = port(target, "target port")?;
    config.protocol = protocol.into();
    Ok(config)
}

/// Splits a command line as a POSIX shell would (quotes and backslashes;
/// no expansion), for `--entrypoint` and `--args`.
pub fn shell_split(flag: &str, value: &str) -> CliResult<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(unterminated(flag, value)),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(unterminated(flag, value)),
                        },
                        Some(c) => word.push(c),
                        None => return Err(unterminated(flag, value)),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn unterminated(flag: &str, value: &str) -> CliError {
    CliError::msg(format!("{flag} {value:?} has an unterminated quote; close it"))
}

