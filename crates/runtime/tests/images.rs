//! Image store against a real registry on loopback (Debian's
//! docker-registry), with images pushed by skopeo. Needs root (ownership,
//! device-node whiteouts, overlay mounts).

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_runtime::image::{
    ignore_progress, Digest, ImageError, ImageId, ImagePlatform, ImageStore, LayerStatus, PinnedImage,
    PullProgress, Reference, RegistryAuth,
};
use shoal_runtime::testing::{TestImages, TestRegistry, TEST_PASSWORD, TEST_USER};

struct Env {
    registry: TestRegistry,
    images: &'static TestImages,
    store: ImageStore,
    _root: tempfile::TempDir,
}

async fn env() -> Env {
    let registry = TestRegistry::start().expect("start registry");
    let images = TestImages::shared().expect("build test images");
    let root = tempfile::tempdir().expect("store dir");
    let store = ImageStore::open(root.path().join("image"), Vec::new())
        .await
        .expect("open store");
    Env {
        registry,
        images,
        store,
        _root: root,
    }
}

impl Env {
    fn push(&self, tag: &str, name: &str, target: &str) -> Digest {
        self.registry
            .push(&self.images.layout, tag, name, target)
            .expect("push")
            .digest
    }

    fn reference(&self, rest: &str) -> Reference {
        Reference::parse(&format!("{}/{rest}", self.registry.host())).expect("reference")
    }

    async fn pull(&self, rest: &str) -> Result<shoal_runtime::image::Image, ImageError> {
        self.store
            .pull(
                &self.reference(rest),
                &RegistryAuth::Anonymous,
                &ignore_progress,
            )
            .await
    }

    /// The blob digests (config, layers) of an image manifest in the layout.
    fn manifest_blobs(&self, tag: &str) -> (Digest, Vec<Digest>) {
        let manifest = self
            .images
            .json_blob(&self.images.digest_of(tag).unwrap())
            .unwrap();
        let digest = |v: &serde_json::Value| Digest::parse(v["digest"].as_str().unwrap()).unwrap();
        let layers = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(digest)
            .collect();
        (digest(&manifest["config"]), layers)
    }

    fn entries(&self, dir: &str) -> Vec<PathBuf> {
        let mut entries: Vec<_> = fs::read_dir(self.store.root().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        entries
    }
}

fn not_in_use(_: &ImageId) -> bool {
    false
}

fn in_use(_: &ImageId) -> bool {
    true
}

#[tokio::test]
async fn pulls_by_tag_and_by_digest() {
    let env = env().await;
    let digest = env.push(TestImages::BUSYBOX, "busybox", "1");
    let (config, layers) = env.manifest_blobs(TestImages::BUSYBOX);

    let events = Arc::new(Mutex::new(Vec::<PullProgress>::new()));
    let sink = {
        let events = events.clone();
        move |p: PullProgress| events.lock().unwrap().push(p)
    };
    let image = env
        .store
        .pull(&env.reference("busybox:1"), &RegistryAuth::Anonymous, &sink)
        .await
        .unwrap();
    let host = env.registry.host();
    assert_eq!(image.id.digest(), &config);
    assert_eq!(image.repo_tags, vec![format!("{host}/busybox:1")]);
    assert_eq!(image.repo_digests, vec![format!("{host}/busybox@{digest}")]);
    assert_eq!(image.config.cmd, vec!["sh"]);
    assert_eq!(image.config.exposed_ports, vec!["8080/tcp"]);
    assert_eq!(
        (image.os.as_str(), image.architecture.as_str()),
        ("linux", "amd64")
    );
    assert_eq!(image.layers.len(), 1);
    assert!(image.layers[0].join("bin/busybox").is_file());
    assert_eq!(
        fs::read_link(image.layers[0].join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert!(image.size > 1_000_000, "size {}", image.size);
    assert!(env
        .store
        .root()
        .join("blobs/sha256")
        .join(layers[0].hex())
        .is_file());
    {
        let events = events.lock().unwrap();
        let layer = layers[0].short();
        assert!(events
            .iter()
            .any(|e| e.layer == layer && matches!(e.status, LayerStatus::Downloading { .. })));
        assert_eq!(events.last().map(|e| &e.status), Some(&LayerStatus::Done));
    }

    // By digest: same image, nothing downloaded again, no tag added.
    events.lock().unwrap().clear();
    let by_digest = env
        .store
        .pull(
            &env.reference(&format!("busybox@{digest}")),
            &RegistryAuth::Anonymous,
            &sink,
        )
        .await
        .unwrap();
    assert_eq!(by_digest.id, image.id);
    assert_eq!(by_digest.repo_tags, image.repo_tags);
    assert_eq!(
        events.lock().unwrap().last().map(|e| &e.status),
        Some(&LayerStatus::AlreadyExists)
    );
    assert_eq!(env.registry.blob_fetches(&layers[0]), 1);

    // Lookups, docker style.
    let id_hex = image.id.digest().hex().to_owned();
    for name in [
        format!("{host}/busybox:1"),
        id_hex[..6].to_owned(),
        image.id.to_string(),
    ] {
        assert_eq!(
            env.store.get(&name).await.map(|i| i.id),
            Some(image.id.clone()),
            "{name}"
        );
    }
    assert!(env.store.get(&format!("{host}/busybox:2")).await.is_none());
    assert!(
        env.store.get(&format!("{host}/busybox")).await.is_none(),
        "busybox means busybox:latest"
    );
    assert!(env.store.get("busybox").await.is_none());
}

#[tokio::test]
async fn resolves_an_index_to_linux_amd64() {
    let env = env().await;
    let index_digest = env.push(TestImages::MULTI_PLATFORM, "multi", "1");
    let (amd64_config, _) = env.manifest_blobs(TestImages::BUSYBOX);
    let image = env.pull("multi:1").await.unwrap();
    assert_eq!(image.id.digest(), &amd64_config);
    assert_eq!(image.architecture, "amd64");
    // The repo digest is the index's, as docker reports it.
    assert_eq!(
        image.repo_digests,
        vec![format!("{}/multi@{index_digest}", env.registry.host())]
    );
}

#[tokio::test]
async fn pins_a_reference_and_learns_its_platforms() {
    let env = env().await;
    let single = env.push(TestImages::BUSYBOX, "busybox", "1");
    let index = env.push(TestImages::MULTI_PLATFORM, "multi", "1");
    let arm = env.push(TestImages::ARM64_ONLY, "armonly", "1");
    let host = env.registry.host();
    async fn pin_in(env: &Env, name: &str) -> Result<PinnedImage, ImageError> {
        env.store.pin_reference(&env.reference(name), &RegistryAuth::Anonymous).await
    }
    let pin = |name: &str| {
        let name = name.to_string();
        let env = &env;
        async move { pin_in(env, &name).await }
    };
    let linux = |arch: &str| ImagePlatform { os: "linux".into(), architecture: arch.into() };

    // A single image: its configuration names the platform.
    let pinned = pin("busybox:1").await.unwrap();
    assert_eq!(pinned.reference, format!("{host}/busybox:1@{single}"));
    assert_eq!(pinned.platforms, vec![linux("amd64")]);
    // An index: the digest is the index's, the platforms its entries'.
    let pinned = pin("multi:1").await.unwrap();
    assert_eq!(pinned.reference, format!("{host}/multi:1@{index}"));
    assert!(pinned.platforms.contains(&linux("amd64")) && pinned.platforms.len() > 1, "{:?}", pinned.platforms);
    // Pinning does not pull, and accepts what this node cannot run.
    assert_eq!(pin("armonly:1").await.unwrap().platforms, vec![linux("arm64")]);
    assert_eq!(pin(&format!("armonly@{arm}")).await.unwrap().reference, format!("{host}/armonly@{arm}"));
    assert!(env.store.list().await.is_empty());
}

#[tokio::test]
async fn refuses_an_index_without_linux_amd64() {
    let env = env().await;
    env.push(TestImages::ARM64_ONLY, "armonly", "1");
    let err = env.pull("armonly:1").await.unwrap_err();
    assert!(
        matches!(err.root(), ImageError::NoMatchingPlatform { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "image {}/armonly:1 has no linux/amd64 variant (it has: linux/arm64)",
            env.registry.host()
        )
    );
    assert!(env.store.list().await.is_empty());
}

#[tokio::test]
async fn overlay_of_the_layers_honours_whiteouts() {
    let env = env().await;
    env.push(TestImages::WHITEOUT, "whiteout", "1");
    let image = env.pull("whiteout:1").await.unwrap();
    assert_eq!(image.layers.len(), 3);

    let target = tempfile::tempdir().unwrap();
    let _mount = OverlayMount::new(&image.overlay_lowerdir(), target.path());
    let merged = target.path();
    assert!(merged.join("bin/busybox").is_file());
    assert_eq!(
        fs::read_to_string(merged.join("data/keep")).unwrap(),
        "keep"
    );
    assert!(
        fs::symlink_metadata(merged.join("data/gone")).is_err(),
        "whited-out file is visible"
    );
    assert_eq!(
        fs::read_to_string(merged.join("opaque/upper")).unwrap(),
        "upper"
    );
    let mut opaque: Vec<_> = fs::read_dir(merged.join("opaque"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    opaque.sort();
    assert_eq!(opaque, vec!["upper"], "opaque dir shows lower entries");
}

/// A read-only overlay mount (lowerdirs only), unmounted on drop.
struct OverlayMount(PathBuf);

impl OverlayMount {
    fn new(lowerdir: &str, target: &Path) -> Self {
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(format!("lowerdir={lowerdir}").as_str()),
        )
        .expect("mount overlay");
        Self(target.to_path_buf())
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test]
async fn refuses_a_corrupted_blob_and_keeps_nothing() {
    let env = env().await;
    env.push(TestImages::BUSYBOX, "busybox", "1");
    let (_, layers) = env.manifest_blobs(TestImages::BUSYBOX);
    env.registry.tamper_blob(&layers[0]).unwrap();

    let err = env.pull("busybox:1").await.unwrap_err();
    assert!(
        matches!(err.root(), ImageError::DigestMismatch { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(layers[0].as_str()), "{err}");
    assert_eq!(env.entries("blobs/sha256"), Vec::<PathBuf>::new());
    assert_eq!(env.entries("layers/sha256"), Vec::<PathBuf>::new());
    assert_eq!(env.entries("tmp"), Vec::<PathBuf>::new());
    assert!(env.store.list().await.is_empty());
}

#[tokio::test]
async fn says_when_an_image_is_missing() {
    let env = env().await;
    env.push(TestImages::BUSYBOX, "busybox", "1");
    let host = env.registry.host();
    for (name, shown) in [("nosuch:1", "nosuch:1"), ("busybox:2", "busybox:2")] {
        let err = env.pull(name).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("image {host}/{shown} not found in registry {host}")
        );
    }
}

#[tokio::test]
async fn fails_fast_on_an_unreachable_registry() {
    let env = env().await;
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let reference = Reference::parse(&format!("127.0.0.1:{port}/busybox:1")).unwrap();
    let started = Instant::now();
    let err = env
        .store
        .pull(&reference, &RegistryAuth::Anonymous, &ignore_progress)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("cannot reach registry 127.0.0.1:{port}: ")),
        "{message}"
    );
    assert!(message.to_lowercase().contains("refused"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_download_each_blob_once() {
    let env = env().await;
    env.push(TestImages::WHITEOUT, "whiteout", "1");
    env.push(TestImages::BUSYBOX, "busybox", "1");
    let reference = env.reference("whiteout:1");
    let pulls = (0..4).map(|_| {
        let (store, reference) = (env.store.clone(), reference.clone());
        tokio::spawn(async move {
            store
                .pull(&reference, &RegistryAuth::Anonymous, &ignore_progress)
                .await
        })
    });
    let results = futures::future::join_all(pulls).await;
    let ids: Vec<ImageId> = results
        .into_iter()
        .map(|r| r.unwrap().unwrap().id)
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]));

    let (config, layers) = env.manifest_blobs(TestImages::WHITEOUT);
    for blob in layers.iter().chain([&config]) {
        assert_eq!(env.registry.blob_fetches(blob), 1, "blob {blob}");
    }
    // busybox shares the base layer: it is not fetched again.
    env.pull("busybox:1").await.unwrap();
    assert_eq!(env.registry.blob_fetches(&layers[0]), 1);
    assert_eq!(env.entries("layers/sha256").len(), 3);
}

#[tokio::test]
async fn lists_untags_removes_and_prunes() {
    let env = env().await;
    env.push(TestImages::BUSYBOX, "busybox", "1");
    env.push(TestImages::WHITEOUT, "whiteout", "1");
    let host = env.registry.host();
    let busybox = env.pull("busybox:1").await.unwrap();
    let whiteout = env.pull("whiteout:1").await.unwrap();
    env.store
        .tag(&format!("{host}/busybox:1"), &env.reference("busybox:2"))
        .await
        .unwrap();

    let listed = env.store.list().await;
    assert_eq!(listed.len(), 2);
    let tags = &listed
        .iter()
        .find(|i| i.id == busybox.id)
        .unwrap()
        .repo_tags;
    assert_eq!(
        tags,
        &vec![format!("{host}/busybox:1"), format!("{host}/busybox:2")]
    );

    // The index survives a restart.
    let reopened = ImageStore::open(env.store.root(), Vec::new())
        .await
        .unwrap();
    assert_eq!(reopened.list().await, listed);

    // One of two tags: untag only.
    let removed = env
        .store
        .remove(&format!("{host}/busybox:1"), false, &not_in_use)
        .await
        .unwrap();
    assert_eq!(removed.untagged, vec![format!("{host}/busybox:1")]);
    assert!(removed.deleted.is_empty());
    assert!(env.store.get(busybox.id.as_str()).await.is_some());

    // In use: refused without force.
    let err = env
        .store
        .remove(&format!("{host}/busybox:2"), false, &in_use)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::InUse { .. }), "{err:?}");

    // Last tag: the image goes; the base layer stays (whiteout uses it).
    let removed = env
        .store
        .remove(&format!("{host}/busybox:2"), false, &not_in_use)
        .await
        .unwrap();
    assert_eq!(removed.deleted, vec![busybox.id.clone()]);
    assert!(env.store.get(busybox.id.as_str()).await.is_none());
    assert!(whiteout.layers.iter().all(|l| l.is_dir()));
    assert_eq!(env.entries("layers/sha256").len(), 3);

    // Forced while in use: it loses its name but stays, dangling.
    let removed = env
        .store
        .remove(&format!("{host}/whiteout:1"), true, &in_use)
        .await
        .unwrap();
    assert!(removed.deleted.is_empty());
    let dangling = env.store.get(whiteout.id.as_str()).await.unwrap();
    assert!(dangling.repo_tags.is_empty());

    // Prune leaves it while in use, then deletes it and everything it held.
    assert!(env
        .store
        .prune(false, &in_use)
        .await
        .unwrap()
        .deleted
        .is_empty());
    let pruned = env.store.prune(false, &not_in_use).await.unwrap();
    assert_eq!(pruned.deleted, vec![whiteout.id.clone()]);
    assert!(
        pruned.reclaimed_bytes > 1_000_000,
        "reclaimed {}",
        pruned.reclaimed_bytes
    );
    assert!(env.store.list().await.is_empty());
    assert_eq!(env.entries("blobs/sha256"), Vec::<PathBuf>::new());
    assert_eq!(env.entries("layers/sha256"), Vec::<PathBuf>::new());

    let err = env
        .store
        .remove("busybox", false, &not_in_use)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no such image: busybox");
}

#[tokio::test]
async fn refuses_removing_a_multi_tagged_image_by_id() {
    let env = env().await;
    env.push(TestImages::BUSYBOX, "busybox", "1");
    let image = env.pull("busybox:1").await.unwrap();
    env.store
        .tag(
            image.id.as_str(),
            &Reference::parse("busybox:local").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        env.store.get("busybox:local").await.map(|i| i.id),
        Some(image.id.clone())
    );

    let err = env
        .store
        .remove(image.id.short(), false, &not_in_use)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::MultipleTags { .. }), "{err:?}");
    let removed = env
        .store
        .remove(image.id.short(), true, &not_in_use)
        .await
        .unwrap();
    assert_eq!(removed.deleted, vec![image.id]);
    assert_eq!(removed.untagged.len(), 3, "{removed:?}");
}

#[tokio::test]
async fn loads_an_oci_archive() {
    let env = env().await;
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("whiteout-oci.tar");
    env.images
        .oci_archive(
            TestImages::WHITEOUT,
            "docker.io/library/whiteout:oci",
            &archive,
        )
        .unwrap();
    let (config, _) = env.manifest_blobs(TestImages::WHITEOUT);

    let loaded = env.store.load(&archive).await.unwrap();
    assert_eq!(loaded.len(), 1);
    let image = &loaded[0];
    assert_eq!(image.id.digest(), &config);
    assert_eq!(image.repo_tags, vec!["docker.io/library/whiteout:oci"]);
    assert_eq!(image.layers.len(), 3);
    assert!(image.layers.iter().all(|l| l.is_dir()));
    assert!(env.store.get("whiteout:oci").await.is_some());
    assert_eq!(env.entries("tmp"), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn loads_a_docker_save_archive() {
    let env = env().await;
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("busybox-save.tar");
    // skopeo's docker-archive cannot carry zstd layers, so this is busybox.
    env.images
        .docker_save_archive(
            TestImages::BUSYBOX,
            "127.0.0.1:5000/busybox:saved",
            &archive,
        )
        .unwrap();

    let loaded = env.store.load(&archive).await.unwrap();
    assert_eq!(loaded.len(), 1);
    let image = &loaded[0];
    assert_eq!(image.repo_tags, vec!["127.0.0.1:5000/busybox:saved"]);
    assert_eq!(image.config.cmd, vec!["sh"]);
    assert_eq!(image.layers.len(), 1);
    assert!(image.layers[0].join("bin/busybox").is_file());

    // The same layer pulled later (gzip this time) is recognised by its
    // diff id and not unpacked again; the image is the same image.
    env.push(TestImages::BUSYBOX, "busybox", "1");
    let events = Arc::new(Mutex::new(Vec::<PullProgress>::new()));
    let sink = {
        let events = events.clone();
        move |p: PullProgress| events.lock().unwrap().push(p)
    };
    let pulled = env
        .store
        .pull(&env.reference("busybox:1"), &RegistryAuth::Anonymous, &sink)
        .await
        .unwrap();
    assert_eq!(pulled.id, image.id);
    assert_eq!(pulled.repo_tags.len(), 2);
    assert!(!events
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.status == LayerStatus::Extracting));
    assert_eq!(env.entries("layers/sha256").len(), 1);
}

#[tokio::test]
async fn refuses_an_archive_with_a_corrupted_layer() {
    let env = env().await;
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("busybox-save.tar");
    env.images
        .docker_save_archive(TestImages::BUSYBOX, "busybox:bad", &archive)
        .unwrap();
    // Flip a byte inside busybox's data, far from any tar header.
    let mut bytes = fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&archive, bytes).unwrap();

    let err = env.store.load(&archive).await.unwrap_err();
    assert!(
        matches!(err.root(), ImageError::DigestMismatch { .. }),
        "{err:?}"
    );
    assert!(env.store.list().await.is_empty());
    assert_eq!(env.entries("blobs/sha256"), Vec::<PathBuf>::new());
    assert_eq!(env.entries("layers/sha256"), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn pulls_with_basic_auth_and_says_when_refused() {
    let registry = TestRegistry::start_with_auth().unwrap();
    let images = TestImages::shared().unwrap();
    registry
        .push(&images.layout, TestImages::BUSYBOX, "private", "1")
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path(), Vec::new()).await.unwrap();
    let reference = Reference::parse(&format!("{}/private:1", registry.host())).unwrap();

    for auth in [
        RegistryAuth::Anonymous,
        RegistryAuth::Basic {
            username: TEST_USER.into(),
            password: "wrong".into(),
        },
    ] {
        let err = store
            .pull(&reference, &auth, &ignore_progress)
            .await
            .unwrap_err();
        assert!(
            matches!(err.root(), ImageError::AuthRefused { .. }),
            "{auth:?}: {err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("registry {} refused access", registry.host())),
            "{err}"
        );
    }
    let auth = RegistryAuth::Basic {
        username: TEST_USER.into(),
        password: TEST_PASSWORD.into(),
    };
    let image = store
        .pull(&reference, &auth, &ignore_progress)
        .await
        .unwrap();
    assert!(image.layers[0].join("bin/busybox").is_file());
}
