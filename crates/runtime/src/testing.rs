//! Test fixtures shared by this crate's tests, the CLI's and tests/cluster:
//! a real registry (Debian's `docker-registry`) on a loopback or namespace
//! address, and small test images built from `busybox-static`, pushed with
//! `skopeo`.
//!
//! The images are written as an OCI layout by the code below rather than
//! with umoci: it is faster, needs one tool fewer, and is deterministic,
//! so every test process can share one cached layout on disk.

use std::fs;
use std::io::{self, BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::image::Digest;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const BUSYBOX: &str = "/bin/busybox";
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Bump when the images below change, so a stale cache is not reused.
const LAYOUT_VERSION: &str = "v2";
/// Fixed so the layout's digests do not change between builds.
const EPOCH: u64 = 1_700_000_000;
const CREATED: &str = "2023-11-14T22:13:20Z";

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

fn failure(message: impl Into<String>) -> io::Error {
    io::Error::other(message.into())
}

/// User and password of a registry started with [`TestRegistry::start_with_auth`].
pub const TEST_USER: &str = "shoal";
pub const TEST_PASSWORD: &str = "shoal-test-password";
/// bcrypt (cost 4, to keep per-request checks cheap) of [`TEST_PASSWORD`].
const TEST_PASSWORD_BCRYPT: &str = "$2b$04$Tvp.848RmEpGnUKFRUK6SuBV2yT3Xv9NF9kF2sH0kt6W3rSMlu7xq";

/// A running `docker-registry`, stopped and its storage removed on drop.
pub struct TestRegistry {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Child,
    requires_auth: bool,
}

impl TestRegistry {
    /// Starts a registry on 127.0.0.1 on a free port.
    pub fn start() -> io::Result<Self> {
        Self::start_at(free_loopback_addr()?)
    }

    /// Starts a registry on 127.0.0.1 that wants HTTP basic auth with
    /// [`TEST_USER`] / [`TEST_PASSWORD`] (pushes here use them).
    pub fn start_with_auth() -> io::Result<Self> {
        Self::launch(free_loopback_addr()?, true)
    }

    /// [`TestRegistry::start_with_auth`] listening on `addr`.
    pub fn start_with_auth_at(addr: SocketAddr) -> io::Result<Self> {
        Self::launch(addr, true)
    }

    /// Starts a registry listening on `addr` (e.g. a namespace host's
    /// underlay address), waiting until it answers `GET /v2/`.
    pub fn start_at(addr: SocketAddr) -> io::Result<Self> {
        Self::launch(addr, false)
    }

    fn launch(addr: SocketAddr, requires_auth: bool) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("shoal-registry-")
            .tempdir()?;
        let mut auth = String::new();
        if requires_auth {
            let htpasswd = dir.path().join("htpasswd");
            fs::write(&htpasswd, format!("{TEST_USER}:{TEST_PASSWORD_BCRYPT}\n"))?;
            auth = format!(
                "auth:\n  htpasswd:\n    realm: shoal-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n{auth}",
                storage = dir.path().join("storage").display(),
            ),
        )?;
        let log = fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                failure(format!(
                    "cannot start {REGISTRY_BIN} (apt-get install docker-registry): {e}"
                ))
            })?;
        let mut registry = Self {
            addr,
            dir,
            child,
            requires_auth,
        };
        registry.wait_ready()?;
        Ok(registry)
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(failure(format!(
                    "docker-registry exited with {status}: {}",
                    self.log()
                )));
            }
            let expected = if self.requires_auth { 401 } else { 200 };
            if http_status(self.addr, "/v2/").is_ok_and(|status| status == expected) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(failure(format!(
                    "docker-registry on {} did not answer in time: {}",
                    self.addr,
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `HOST:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The registry's own log, including its access log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many times a blob was fetched (`GET .../blobs/<digest>`), from the access log.
    pub fn blob_fetches(&self, digest: &Digest) -> usize {
        let wanted = format!("/blobs/{digest}");
        let log = self.log();
        log.lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&wanted))
            .count()
    }

    /// The file holding `digest` in the registry's storage.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Flips one byte of a stored blob (keeping its size), so the registry
    /// serves content that no longer matches its digest.
    pub fn tamper_blob(&self, digest: &Digest) -> io::Result<()> {
        let path = self.blob_path(digest);
        let mut bytes = fs::read(&path)?;
        let middle = bytes.len() / 2;
        let byte = bytes
            .get_mut(middle)
            .ok_or_else(|| failure("blob is empty"))?;
        *byte ^= 0xff;
        fs::write(&path, bytes)
    }

    /// Copies image `tag` of the OCI layout at `layout` to `NAME:TARGET_TAG`
    /// here (all platforms when it is an index). Returns the pushed
    /// manifest's digest.
    pub fn push(
        &self,
        layout: &Path,
        tag: &str,
        name: &str,
        target_tag: &str,
    ) -> io::Result<PushedImage> {
        let digest_file = self
            .dir
            .path()
            .join(format!("digest-{name}-{target_tag}").replace('/', "_"));
        let reference = format!("{}/{name}:{target_tag}", self.host());
        let mut command = Command::new("skopeo");
        command
            .args([
                "copy",
                "--all",
                "--preserve-digests",
                "--quiet",
                "--dest-tls-verify=false",
                "--digestfile",
            ])
            .arg(&digest_file);
        if self.requires_auth {
            command.arg(format!("--dest-creds={TEST_USER}:{TEST_PASSWORD}"));
        }
        let output = command
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{reference}"))
            .output()
            .map_err(|e| failure(format!("cannot run skopeo (apt-get install skopeo): {e}")))?;
        if !output.status.success() {
            return Err(failure(format!(
                "skopeo copy to {reference} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        let digest = fs::read_to_string(&digest_file)?;
        let digest = Digest::parse(digest.trim())
            .ok_or_else(|| failure(format!("skopeo wrote digest {digest:?}")))?;
        Ok(PushedImage { reference, digest })
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An image pushed to a [`TestRegistry`].
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// `HOST:PORT/NAME:TAG`.
    pub reference: String,
    /// The digest of what the tag points at (an index for multi-platform images).
    pub digest: Digest,
}

fn free_loopback_addr() -> io::Result<SocketAddr> {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
}

/// Minimal HTTP/1.0 GET; enough to probe the registry without an HTTP client.
fn http_status(addr: SocketAddr, path: &str) -> io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut status_line = String::new();
    io::BufReader::new(stream).read_line(&mut status_line)?;
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| failure(format!("unexpected answer {status_line:?}")))
}

/// The test images, as tags of one OCI layout on disk.
pub struct TestImages {
    pub layout: PathBuf,
}

impl TestImages {
    /// Plain busybox (one gzip layer, `CMD ["sh"]`).
    pub const BUSYBOX: &'static str = "busybox";
    /// An index with linux/amd64 and linux/arm64 busybox images.
    pub const MULTI_PLATFORM: &'static str = "multi";
    /// An index with only a linux/arm64 image.
    pub const ARM64_ONLY: &'static str = "arm64-only";
    /// Three layers: busybox (gzip); `/data/{keep,gone}` and
    /// `/opaque/{lower-a,lower-b}` (zstd); then a whiteout for `/data/gone`,
    /// `/opaque` made opaque and `/opaque/upper` (uncompressed tar).
    pub const WHITEOUT: &'static str = "whiteout";
    /// busybox with docker's `config.Healthcheck`: [`HEALTHCHECK_TEST`]
    /// every 200ms, timeout 2s, 2 retries (`HEALTHCHECK` in a Dockerfile).
    pub const HEALTHCHECK: &'static str = "healthcheck";
    /// What the [`Self::HEALTHCHECK`] image probes: healthy once the file exists.
    pub const HEALTHCHECK_TEST: [&'static str; 2] = ["CMD-SHELL", "test -e /tmp/healthy"];

    /// The layout, built once per machine (it is deterministic, so a cached
    /// copy keyed by the busybox binary is as good as a fresh one).
    pub fn shared() -> io::Result<&'static TestImages> {
        static IMAGES: OnceLock<TestImages> = OnceLock::new();
        if let Some(images) = IMAGES.get() {
            return Ok(images);
        }
        let busybox = fs::read(BUSYBOX).map_err(|e| {
            failure(format!(
                "cannot read {BUSYBOX} (apt-get install busybox-static): {e}"
            ))
        })?;
        let key = Digest::of_bytes(&busybox);
        let layout = std::env::temp_dir().join(format!(
            "shoal-test-images-{LAYOUT_VERSION}-{}",
            key.short()
        ));
        if !layout.join("index.json").exists() {
            let staging = tempfile::Builder::new()
                .prefix("shoal-test-images-")
                .tempdir()?;
            build_layout(staging.path(), &busybox)?;
            // Another test process may have won the race; its copy is identical.
            if fs::rename(staging.path(), &layout).is_err() && !layout.join("index.json").exists() {
                return Err(failure(format!("cannot create {}", layout.display())));
            }
        }
        Ok(IMAGES.get_or_init(|| TestImages { layout }))
    }

    /// Writes `tag` as a `docker save` tarball (`manifest.json`, `RepoTags`
    /// = `name`) with skopeo's docker-archive transport.
    pub fn docker_save_archive(&self, tag: &str, name: &str, dest: &Path) -> io::Result<()> {
        self.skopeo_export(tag, &format!("docker-archive:{}:{name}", dest.display()))
    }

    /// Writes `tag` as an OCI image-layout tarball whose index names the image `ref_name`.
    pub fn oci_archive(&self, tag: &str, ref_name: &str, dest: &Path) -> io::Result<()> {
        self.skopeo_export(tag, &format!("oci-archive:{}:{ref_name}", dest.display()))
    }

    fn skopeo_export(&self, tag: &str, destination: &str) -> io::Result<()> {
        let output = Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("oci:{}:{tag}", self.layout.display()))
            .arg(destination)
            .output()
            .map_err(|e| failure(format!("cannot run skopeo (apt-get install skopeo): {e}")))?;
        if !output.status.success() {
            return Err(failure(format!(
                "skopeo copy to {destination} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(())
    }

    /// The digest of the manifest or index that `tag` names in the layout.
    pub fn digest_of(&self, tag: &str) -> io::Result<Digest> {
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(self.layout.join("index.json"))?)?;
        index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .and_then(|m| m["digest"].as_str())
            .and_then(Digest::parse)
            .ok_or_else(|| failure(format!("no tag {tag} in the test layout")))
    }

    /// Parses a blob of the layout as JSON (manifests, indexes, configs).
    pub fn json_blob(&self, digest: &Digest) -> io::Result<serde_json::Value> {
        Ok(serde_json::from_slice(&fs::read(
            self.layout.join("blobs/sha256").join(digest.hex()),
        )?)?)
    }
}

/// A blob written into the layout, as a descriptor would name it.
struct Blob {
    media_type: &'static str,
    digest: Digest,
    size: usize,
}

impl Blob {
    fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest.as_str(), "size": self.size})
    }
}

struct LayoutWriter {
    root: PathBuf,
    index: Vec<serde_json::Value>,
}

impl LayoutWriter {
    fn blob(&self, media_type: &'static str, bytes: &[u8]) -> io::Result<Blob> {
        let digest = Digest::of_bytes(bytes);
        fs::write(self.root.join("blobs/sha256").join(digest.hex()), bytes)?;
        Ok(Blob {
            media_type,
            digest,
            size: bytes.len(),
        })
    }

    fn json(&self, media_type: &'static str, value: &serde_json::Value) -> io::Result<Blob> {
        self.blob(media_type, &serde_json::to_vec(value)?)
    }

    /// Writes config and manifest for `layers` (each with its uncompressed tar).
    fn image(&self, arch: &str, layers: &[(&Blob, &[u8])]) -> io::Result<Blob> {
        self.image_with(arch, layers, None)
    }

    /// [`Self::image`], with docker's `config.Healthcheck` when given.
    fn image_with(&self, arch: &str, layers: &[(&Blob, &[u8])], healthcheck: Option<serde_json::Value>) -> io::Result<Blob> {
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|(_, tar)| Digest::of_bytes(tar).to_string())
            .collect();
        let config = self.json(
            OCI_CONFIG,
            &json!({
                "created": CREATED,
                "architecture": arch,
                "os": "linux",
                "config": {
                    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                    "Cmd": ["sh"],
                    "WorkingDir": "/",
                    "Labels": {"org.shoal.test": "true"},
                    "ExposedPorts": {"8080/tcp": {}}
                },
                "rootfs": {"type": "layers", "diff_ids": diff_ids}
            }),
        )?;
        let config = match healthcheck {
            None => config,
            Some(check) => {
                let mut value: serde_json::Value = serde_json::from_slice(&fs::read(self.root.join("blobs/sha256").join(config.digest.hex()))?)?;
                value["config"]["Healthcheck"] = check;
                self.json(OCI_CONFIG, &value)?
            }
        };
        let layers: Vec<_> = layers.iter().map(|(blob, _)| blob.descriptor()).collect();
        self.json(
            OCI_MANIFEST,
            &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(), "layers": layers}),
        )
    }

    fn platform_index(&self, entries: &[(&Blob, &str)]) -> io::Result<Blob> {
        let manifests: Vec<_> = entries
            .iter()
            .map(|(blob, arch)| {
                let mut d = blob.descriptor();
                d["platform"] = json!({"os": "linux", "architecture": arch});
                d
            })
            .collect();
        self.json(
            OCI_INDEX,
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
        )
    }

    fn tag(&mut self, blob: &Blob, tag: &str) {
        let mut d = blob.descriptor();
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.index.push(d);
    }
}

fn build_layout(root: &Path, busybox: &[u8]) -> io::Result<()> {
    fs::create_dir_all(root.join("blobs/sha256"))?;
    fs::write(
        root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let mut w = LayoutWriter {
        root: root.to_path_buf(),
        index: Vec::new(),
    };

    let base_tar = busybox_layer(busybox)?;
    let base = w.blob(LAYER_GZIP, &gzip(&base_tar)?)?;
    let amd64 = w.image("amd64", &[(&base, &base_tar)])?;
    let arm64 = w.image("arm64", &[(&base, &base_tar)])?;
    w.tag(&amd64, TestImages::BUSYBOX);
    let multi = w.platform_index(&[(&amd64, "amd64"), (&arm64, "arm64")])?;
    w.tag(&multi, TestImages::MULTI_PLATFORM);
    let arm_only = w.platform_index(&[(&arm64, "arm64")])?;
    w.tag(&arm_only, TestImages::ARM64_ONLY);
    // Durations in nanoseconds, as docker writes them.
    let healthcheck = json!({"Test": TestImages::HEALTHCHECK_TEST, "Interval": 200_000_000u64, "Timeout": 2_000_000_000u64, "Retries": 2});
    let checked = w.image_with("amd64", &[(&base, &base_tar)], Some(healthcheck))?;
    w.tag(&checked, TestImages::HEALTHCHECK);

    let mut lower = TarWriter::default();
    lower
        .dir("data")?
        .file("data/keep", b"keep")?
        .file("data/gone", b"gone")?;
    lower
        .dir("opaque")?
        .file("opaque/lower-a", b"a")?
        .file("opaque/lower-b", b"b")?;
    let lower_tar = lower.finish()?;
    let lower_blob = w.blob(LAYER_ZSTD, &zstd::encode_all(lower_tar.as_slice(), 3)?)?;
    let mut upper = TarWriter::default();
    upper.dir("data")?.file("data/.wh.gone", b"")?;
    upper
        .dir("opaque")?
        .file("opaque/.wh..wh..opq", b"")?
        .file("opaque/upper", b"upper")?;
    let upper_tar = upper.finish()?;
    let upper_blob = w.blob(LAYER_TAR, &upper_tar)?;
    let whiteout = w.image(
        "amd64",
        &[
            (&base, &base_tar),
            (&lower_blob, &lower_tar),
            (&upper_blob, &upper_tar),
        ],
    )?;
    w.tag(&whiteout, TestImages::WHITEOUT);

    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": w.index});
    fs::write(root.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(())
}

/// busybox and its applets as symlinks, like the official image.
fn busybox_layer(busybox: &[u8]) -> io::Result<Vec<u8>> {
    let output = Command::new(BUSYBOX).arg("--list").output()?;
    let mut applets: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_owned)
        .collect();
    applets.sort();
    applets.dedup();

    let mut tar = TarWriter::default();
    for dir in [
        "bin", "dev", "etc", "proc", "root", "sys", "tmp", "usr", "usr/bin", "var",
    ] {
        tar.dir(dir)?;
    }
    tar.file_mode("bin/busybox", busybox, 0o755)?;
    for applet in &applets {
        tar.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    tar.file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    tar.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")?;
    tar.finish()
}

fn gzip(bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// Deterministic tar building: fixed owner and times.
#[derive(Default)]
struct TarWriter {
    builder: Option<tar::Builder<Vec<u8>>>,
}

impl TarWriter {
    fn append(
        &mut self,
        kind: tar::EntryType,
        path: &str,
        mode: u32,
        data: &[u8],
        link: Option<&str>,
    ) -> io::Result<&mut Self> {
        let builder = self
            .builder
            .get_or_insert_with(|| tar::Builder::new(Vec::new()));
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(EPOCH);
        header.set_size(data.len() as u64);
        if let Some(link) = link {
            header.set_link_name(link)?;
        }
        builder.append_data(&mut header, path, data)?;
        Ok(self)
    }

    fn dir(&mut self, path: &str) -> io::Result<&mut Self> {
        let mode = if path == "tmp" { 0o1777 } else { 0o755 };
        self.append(tar::EntryType::Directory, path, mode, &[], None)
    }

    fn file(&mut self, path: &str, data: &[u8]) -> io::Result<&mut Self> {
        self.file_mode(path, data, 0o644)
    }

    fn file_mode(&mut self, path: &str, data: &[u8], mode: u32) -> io::Result<&mut Self> {
        self.append(tar::EntryType::Regular, path, mode, data, None)
    }

    fn symlink(&mut self, path: &str, target: &str) -> io::Result<&mut Self> {
        self.append(tar::EntryType::Symlink, path, 0o777, &[], Some(target))
    }

    fn finish(&mut self) -> io::Result<Vec<u8>> {
        let builder = self
            .builder
            .take()
            .unwrap_or_else(|| tar::Builder::new(Vec::new()));
        builder.into_inner()
    }
}
