//! What the store knows about an image, as handed to callers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use super::digest::{Digest, ImageId};
use crate::container::model::HealthConfig;

/// An image in the local store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The digest of the image's configuration, as in docker.
    pub id: ImageId,
    /// Normalised `registry/repository:tag` names pointing at this image.
    pub repo_tags: Vec<String>,
    /// `registry/repository@sha256:<manifest digest>` for each place it was pulled from.
    pub repo_digests: Vec<String>,
    pub config: ImageConfig,
    /// The unpacked layer directories, lowest first, for use as overlayfs
    /// lowerdirs (see [`Image::overlay_lowerdir`]).
    pub layers: Vec<PathBuf>,
    /// The uncompressed digests of the layers, lowest first.
    pub diff_ids: Vec<Digest>,
    /// Bytes of the uncompressed layers.
    pub size: u64,
    /// When the image was built (RFC 3339, from its configuration).
    pub created: Option<String>,
    pub os: String,
    pub architecture: String,
}

impl Image {
    /// The `lowerdir=` value for overlayfs, which lists the topmost layer first.
    pub fn overlay_lowerdir(&self) -> String {
        self.layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// The parts of an image's configuration that shape a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `PORT/PROTO`, e.g. `80/tcp`.
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
    pub stop_signal: Option<String>,
    /// docker's `config.Healthcheck`, which the OCI config does not model.
    /// Images stored before this field existed have none until pulled again.
    #[serde(default)]
    pub healthcheck: Option<HealthConfig>,
}

impl ImageConfig {
    /// From the parsed configuration and its JSON (`raw`), which holds
    /// docker's fields the OCI types drop.
    pub fn from_oci(config: &ImageConfiguration, raw: &[u8]) -> Self {
        let healthcheck = healthcheck_of(raw);
        let Some(c) = config.config() else {
            return Self { healthcheck, ..Self::default() };
        };
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        Self {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: non_empty(c.working_dir()),
            user: non_empty(c.user()),
            labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
            exposed_ports: c.exposed_ports().clone().unwrap_or_default(),
            volumes: c.volumes().clone().unwrap_or_default(),
            stop_signal: non_empty(c.stop_signal()),
            healthcheck,
        }
    }
}

/// `config.Healthcheck` of a docker image configuration: `Test`, and
/// `Interval`, `Timeout`, `StartPeriod`, `StartInterval` in nanoseconds,
/// `Retries`. Values that are absent, negative or of the wrong type read
/// as unset, since a registry's JSON must not fail a pull over them.
fn healthcheck_of(raw: &[u8]) -> Option<HealthConfig> {
    let value: serde_json::Value = serde_json::from_slice(raw).ok()?;
    let check = value.get("config")?.get("Healthcheck")?.as_object()?;
    let nanos = |key: &str| Duration::from_nanos(check.get(key).and_then(|v| v.as_u64()).unwrap_or(0));
    let test: Vec<String> = check
        .get("Test")
        .and_then(|t| t.as_array())
        .map(|items| items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    Some(HealthConfig {
        test,
        interval: nanos("Interval"),
        timeout: nanos("Timeout"),
        retries: check.get("Retries").and_then(|v| v.as_u64()).map_or(0, |r| u32::try_from(r).unwrap_or(u32::MAX)),
        start_period: nanos("StartPeriod"),
        start_interval: nanos("StartInterval"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_healthcheck_is_read_from_the_raw_config() {
        let raw = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
            "config":{"Cmd":["sh"],"Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":1000000000,"Retries":2,"Timeout":-5}}}"#;
        let parsed: ImageConfiguration = serde_json::from_slice(raw).unwrap();
        let config = ImageConfig::from_oci(&parsed, raw);
        let check = config.healthcheck.unwrap();
        assert_eq!(check.test, vec!["CMD-SHELL", "true"]);
        assert_eq!((check.interval, check.timeout, check.retries), (Duration::from_secs(1), Duration::ZERO, 2));
        assert_eq!(config.cmd, vec!["sh"]);
        let none = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#;
        assert_eq!(ImageConfig::from_oci(&serde_json::from_slice(none).unwrap(), none).healthcheck, None);
    }
}
