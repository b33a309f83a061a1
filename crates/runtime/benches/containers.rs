//! `run --rm /bin/true` through ContainerManager (create, start, wait,
//! remove: overlay root, shim, cgroups, mounts, seccomp) against
//! `runc run` of an equivalent bundle, in the same run; then 50 of each
//! in parallel, and the RSS of one shim. Needs root, runc and
//! busybox-static.
//!
//!     cargo bench -p shoal-runtime --features test-support --bench containers [-- N]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_runtime::container::{model, state, ContainerManager, CreateRequest, ImageInput, LogRotation, ManagerConfig};

const PARALLEL: usize = 50;

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(100);
    let dir = tempfile::Builder::new().prefix("shoal-bench-").tempdir().expect("temp dir");
    let layer = dir.path().join("layer");
    busybox_layer(&layer);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    let cgroup_parent = format!("shoal-bench-{}", std::process::id());

    let manager = runtime.block_on(ContainerManager::open(ManagerConfig {
        root: dir.path().join("containers"),
        volumes: dir.path().join("volumes"),
        cgroup_parent: cgroup_parent.clone(),
        shim_command: vec![env!("CARGO_BIN_EXE_shoal-shim").into()],
        log_rotation: LogRotation::default(),
    }));
    let manager = manager.expect("open the container manager");
    let mut config = oci_spec::image::Config::default();
    config.set_env(Some(vec!["PATH=/bin".into()]));
    let image = Arc::new(ImageInput { id: "sha256:bench".into(), reference: "busybox:bench".into(), layers: vec![layer.clone()], config, healthcheck: None });

    // runc's bundle: the same busybox tree as its root, runc's default
    // spec (namespaces, masked paths, Docker-like capabilities; no
    // seccomp, so runc is spared that cost), runc's own cgroup per container.
    let bundle = dir.path().join("bundle");
    runc_bundle(&bundle, &layer);
    let runc_root = dir.path().join("runc");

    println!("{n} sequential containers running /bin/true, create to delete:");
    for _ in 0..3 {
        runtime.block_on(run_ours(&manager, &image));
        run_runc(&runc_root, &bundle, "warmup");
    }
    let mut phases = [Duration::ZERO; 4];
    let begun = Instant::now();
    for _ in 0..n {
        let times = runtime.block_on(run_ours(&manager, &image));
        for (total, t) in phases.iter_mut().zip(times) {
            *total += t;
        }
    }
    let ours = begun.elapsed() / n as u32;
    let begun = Instant::now();
    for i in 0..n {
        run_runc(&runc_root, &bundle, &format!("seq-{i}"));
    }
    let runc = begun.elapsed() / n as u32;
    println!("  runc run:        {:>7.2} ms per container", ms(runc));
    println!("  shoal (manager): {:>7.2} ms per container ({:.2}x runc)", ms(ours), ms(ours) / ms(runc));
    let [create, start, wait, remove] = phases.map(|p| ms(p / n as u32));
    println!("    create {create:.2} ms, start {start:.2} ms, wait {wait:.2} ms, remove {remove:.2} ms");

    println!("{PARALLEL} containers started in parallel, each create to delete:");
    let begun = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..PARALLEL)
            .map(|_| {
                let (manager, image) = (manager.clone(), image.clone());
                tokio::spawn(async move { run_ours(&manager, &image).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("container task");
        }
    });
    let ours = begun.elapsed();
    let begun = Instant::now();
    std::thread::scope(|scope| {
        for i in 0..PARALLEL {
            let (root, bundle) = (&runc_root, &bundle);
            scope.spawn(move || run_runc(root, bundle, &format!("par-{i}")));
        }
    });
    let runc = begun.elapsed();
    println!("  runc run:        {:>7.1} ms", ms(runc));
    println!("  shoal (manager): {:>7.1} ms ({:.2}x runc)", ms(ours), ms(ours) / ms(runc));

    let rss = runtime.block_on(shim_rss(&manager, &image, &dir.path().join("containers")));
    println!("shim RSS with a running container: {rss} KiB");

    drop(manager);
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let _ = std::fs::remove_dir(hierarchy.path().join(&cgroup_parent));
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One `run --rm IMAGE /bin/true`; the time of each phase.
async fn run_ours(manager: &Arc<ContainerManager>, image: &ImageInput) -> [Duration; 4] {
    let request = CreateRequest { command: vec!["/bin/true".into()], ..Default::default() };
    let t0 = Instant::now();
    let id = manager.create(request, image).await.expect("create");
    let t1 = Instant::now();
    manager.start(&id).await.expect("start");
    let t2 = Instant::now();
    let exit = manager.wait(&id).await.expect("wait");
    assert_eq!(exit.code, 0, "{exit:?}");
    let t3 = Instant::now();
    manager.remove(&id, false).await.expect("remove");
    [t1 - t0, t2 - t1, t3 - t2, t3.elapsed()]
}

fn run_runc(root: &Path, bundle: &Path, id: &str) {
    let status = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("runc is installed");
    assert!(status.success(), "runc run failed");
}

async fn shim_rss(manager: &Arc<ContainerManager>, image: &ImageInput, root: &Path) -> u64 {
    let request = CreateRequest { command: vec!["sleep".into(), "30".into()], ..Default::default() };
    let id = manager.create(request, image).await.expect("create");
    manager.start(&id).await.expect("start");
    let started: model::Started = state::read_json(&root.join(&id).join(state::STARTED_FILE)).expect("started.json");
    let status = std::fs::read_to_string(format!("/proc/{}/status", started.shim_pid)).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    manager.remove(&id, true).await.expect("remove");
    rss
}

fn busybox_layer(layer: &Path) {
    for dir in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(layer.join(dir)).expect("layer dirs");
    }
    std::fs::copy("/bin/busybox", layer.join("bin/busybox")).expect("busybox-static is installed");
    for applet in ["true", "sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", layer.join("bin").join(applet)).expect("applet link");
    }
    std::fs::write(layer.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
}

fn runc_bundle(bundle: &Path, layer: &Path) {
    std::fs::create_dir_all(bundle).expect("bundle dir");
    let status = Command::new("runc").args(["spec", "--bundle"]).arg(bundle).status().expect("runc is installed");
    assert!(status.success(), "runc spec failed");
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("spec")).expect("spec json");
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    spec["root"] = serde_json::json!({ "path": PathBuf::from(layer), "readonly": false });
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).expect("spec json")).expect("write spec");
}
