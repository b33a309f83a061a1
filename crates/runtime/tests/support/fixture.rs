//! The container fixture the runtime's container tests share: its own
//! directories, cgroup parent and busybox image per test; `finish` checks
//! that removing the containers left nothing, and a Drop guard sweeps up
//! after a failed test. Include with `#[path = "support/fixture.rs"] mod fixture;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shoal_runtime::container::{ContainerManager, CreateRequest, ExitInfo, ImageInput, LogOptions, LogRotation, ManagerConfig};
use tokio_stream::StreamExt;

#[path = "cleanup.rs"]
pub mod cleanup;
use cleanup::{container_cgroups, mounts_under};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub cgroup_parent: String,
    pub image: ImageInput,
    pub manager: Option<Arc<ContainerManager>>,
}

impl Fixture {
    pub async fn new(test: &str) -> Fixture {
        let dir = tempfile::Builder::new().prefix("shoal-ct-").tempdir().expect("temp dir");
        let layer = dir.path().join("layer");
        busybox_layer(&layer);
        let mut config = oci_spec::image::Config::default();
        config
            .set_cmd(Some(vec!["sh".into()]))
            .set_env(Some(vec!["PATH=/bin".into(), "FROM_IMAGE=yes".into()]))
            .set_labels(Some(HashMap::from([("from".to_string(), "image".to_string())])));
        let image = ImageInput { id: "sha256:busybox-test".into(), reference: "busybox:test".into(), layers: vec![layer], config, healthcheck: None };
        let cgroup_parent = format!("shoal-test-{}-{test}", std::process::id());
        let mut fixture = Fixture { dir, cgroup_parent, image, manager: None };
        fixture.manager = Some(fixture.open().await);
        fixture
    }

    pub fn config(&self) -> ManagerConfig {
        let root = self.dir.path();
        ManagerConfig {
            root: root.join("containers"),
            volumes: root.join("volumes"),
            cgroup_parent: self.cgroup_parent.clone(),
            shim_command: vec![env!("CARGO_BIN_EXE_shoal-shim").into()],
            log_rotation: LogRotation::default(),
        }
    }

    pub async fn open(&self) -> Arc<ContainerManager> {
        ContainerManager::open(self.config()).await.expect("open the container manager")
    }

    pub fn manager(&self) -> &Arc<ContainerManager> {
        self.manager.as_ref().expect("manager open")
    }

    pub fn request(&self, command: &[&str]) -> CreateRequest {
        CreateRequest { command: command.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    pub async fn start(&self, request: CreateRequest) -> String {
        let id = self.manager().create(request, &self.image).await.expect("create");
        self.manager().start(&id).await.expect("start");
        id
    }

    /// Runs to completion; returns the exit and stdout+stderr, and removes
    /// the container.
    pub async fn run(&self, request: CreateRequest) -> (ExitInfo, String) {
        let id = self.start(request).await;
        let exit = self.manager().wait(&id).await.expect("wait");
        let output = self.output(&id).await;
        self.manager().remove(&id, false).await.expect("remove");
        (exit, output)
    }

    pub async fn output(&self, id: &str) -> String {
        let entries: Vec<_> = self.manager().logs(id, LogOptions::default()).expect("logs").collect().await;
        entries.iter().map(|e| String::from_utf8_lossy(&e.bytes)).collect()
    }

    pub async fn sh(&self, script: &str) -> (ExitInfo, String) {
        self.run(self.request(&["sh", "-c", script])).await
    }

    /// Removes every container through the API, then checks that nothing
    /// is left on the host.
    pub async fn finish(mut self) {
        let manager = self.manager.take().expect("manager open");
        for container in manager.list(true) {
            manager.remove(&container.id, true).await.expect("remove at the end");
        }
        assert!(std::fs::read_dir(self.dir.path().join("containers")).unwrap().next().is_none(), "container state left behind");
        drop(manager);
        assert_eq!(mounts_under(self.dir.path()), Vec::<String>::new(), "mounts left behind");
        assert_eq!(container_cgroups(&self.cgroup_parent), Vec::<PathBuf>::new(), "cgroups left behind");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        cleanup::sweep(self.dir.path(), &self.cgroup_parent);
    }
}

/// A layer with busybox, its applets, and users root, app (1000) and
/// nobody, as an image's unpacked layer directory.
pub fn busybox_layer(layer: &Path) {
    for dir in ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "home/app", "srv"] {
        std::fs::create_dir_all(layer.join(dir)).unwrap();
    }
    std::fs::copy("/bin/busybox", layer.join("bin/busybox")).expect("busybox-static is installed");
    let list = std::process::Command::new("/bin/busybox").arg("--list").output().expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.contains('/') {
            let _ = std::os::unix::fs::symlink("busybox", layer.join("bin").join(applet));
        }
    }
    std::fs::write(
        layer.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(layer.join("etc/group"), "root:x:0:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n").unwrap();
    std::fs::write(layer.join("srv/from-layer"), "layer\n").unwrap();
}

