//! Container runtime benchmark, against runc in the same run (release
//! build: `cargo bench -p shoal-cli --bench runtime`; needs root, runc,
//! docker-registry, skopeo and busybox-static):
//!
//! - 100 sequential `run --rm busybox /bin/true` through the daemon (create,
//!   start, wait, delete), and 100 `runc run` of an equivalent bundle (same
//!   busybox root filesystem, /bin/true); target: ours <= 0.5x runc's time.
//! - 50 containers started in parallel: time until all run.
//! - the daemon's RSS and one shim's (target: shim < 5 MiB).
//!
//! Not a test: it never runs in CI.

#[path = "../../../tests/cluster/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use shoal_proto::pb;
use shoal_runtime::testing::{TestImages, TestRegistry};
use support::node::LocalNode;

const SEQUENTIAL: usize = 100;
const PARALLEL: usize = 50;

fn main() {
    let registry = TestRegistry::start().expect("starting docker-registry");
    let images = TestImages::shared().expect("building the test images");
    let image = registry.push(&images.layout, TestImages::BUSYBOX, "busybox", "1").expect("pushing busybox").reference;
    let node = LocalNode::start("bench");
    node.shoal(&["image", "pull", "-q", &image]).ok();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");

    let ours = runtime.block_on(sequential_runs(&node.socket, &image));
    let runc = runc_runs(&node);
    let (parallel_start, shim_rss, daemon_rss) = runtime.block_on(parallel_starts(&node, &image));

    let per = |d: Duration| d.as_secs_f64() * 1000.0 / SEQUENTIAL as f64;
    println!();
    println!("{:<52} {:>12} {:>12}", "container runtime (this machine, same run)", "ours", "runc");
    println!("{:<52} {:>9.1} ms {:>9.1} ms", format!("run --rm /bin/true, create..delete, mean of {SEQUENTIAL}"), per(ours), per(runc));
    println!("{:<52} {:>12.2} {:>12}", "  ratio ours/runc (target <= 0.5)", per(ours) / per(runc), "");
    println!("{:<52} {:>9.0} ms", format!("{PARALLEL} containers started in parallel, all running"), parallel_start.as_secs_f64() * 1000.0);
    println!("{:<52} {:>8.1} MiB", "one shim's RSS (target < 5 MiB)", shim_rss as f64 / 1024.0);
    println!("{:<52} {:>8.1} MiB", format!("daemon RSS with {PARALLEL} containers"), daemon_rss as f64 / 1024.0);
    drop(registry);
}

async fn client(socket: &Path) -> pb::runtime_client::RuntimeClient<tonic::transport::Channel> {
    let channel = shoal_proto::tls::connect_unix(socket).await.expect("connecting to the daemon");
    pb::runtime_client::RuntimeClient::new(channel)
}

fn run_request(image: &str, command: &[&str], detach: bool) -> pb::RunContainerRequest {
    pb::RunContainerRequest {
        image: image.into(),
        command: command.iter().map(|c| c.to_string()).collect(),
        auto_remove: !detach,
        detach,
        ..Default::default()
    }
}

/// `shoal run --rm IMAGE /bin/true`, the API calls the CLI makes, one after another.
async fn sequential_runs(socket: &Path, image: &str) -> Duration {
    let mut runtime = client(socket).await;
    // Run 0 is unmeasured: it warms the page cache.
    let mut started = Instant::now();
    for i in 0..=SEQUENTIAL {
        if i == 1 {
            started = Instant::now();
        }
        let mut events = runtime.run_container(run_request(image, &["/bin/true"], false)).await.expect("run").into_inner();
        let mut exited = false;
        while let Some(event) = events.message().await.expect("run events") {
            if let Some(pb::run_event::Event::Exit(exit)) = event.event {
                assert_eq!(exit.code, 0, "{}", exit.error);
                exited = true;
            }
        }
        assert!(exited, "the run ended without an exit");
    }
    started.elapsed()
}

/// `runc run` of a bundle over the same unpacked busybox layer: the same
/// root filesystem and command, with runc's default spec.
fn runc_runs(node: &LocalNode) -> Duration {
    let layers = node.data_root().join("image/layers/sha256");
    let layer = std::fs::read_dir(&layers).expect("the pulled layer").flatten().next().expect("one layer").path();
    let bundle = node.root.join("runc-bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let status = Command::new("runc").arg("spec").current_dir(&bundle).status().expect("runc spec (apt-get install runc)");
    assert!(status.success());
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    spec["root"] = serde_json::json!({ "path": layer, "readonly": true });
    std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    let root = node.root.join("runc-state");
    let run = |i: usize| {
        let status = Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(format!("bench-{}-{i}", std::process::id()))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("runc run");
        assert!(status.success(), "runc run failed");
    };
    run(usize::MAX);
    let started = Instant::now();
    for i in 0..SEQUENTIAL {
        run(i);
    }
    started.elapsed()
}

/// Starts PARALLEL detached containers at once; returns how long until all
/// ran, one shim's RSS and the daemon's, then removes them.
async fn parallel_starts(node: &LocalNode, image: &str) -> (Duration, u64, u64) {
    let started = Instant::now();
    let runs = (0..PARALLEL).map(|_| {
        let socket = node.socket.clone();
        let image = image.to_string();
        tokio::spawn(async move {
            let mut runtime = client(&socket).await;
            let mut events = runtime.run_container(run_request(&image, &["sleep", "60"], true)).await.expect("run").into_inner();
            while let Some(event) = events.message().await.expect("run events") {
                if let Some(pb::run_event::Event::Created(id)) = event.event {
                    return id;
                }
            }
            panic!("no container id");
        })
    });
    let ids = futures::future::join_all(runs).await;
    let elapsed = started.elapsed();
    let shim_rss = support::node::processes_using(&node.root, None)
        .into_iter()
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.windows(6).any(|w| w == b"__shim")))
        .filter_map(rss_kib)
        .max()
        .unwrap_or(0);
    let daemon_rss = support::node::processes_using(&node.root, None)
        .into_iter()
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.windows(6).any(|w| w == b"daemon")))
        .filter_map(rss_kib)
        .max()
        .unwrap_or(0);
    let mut runtime = client(&node.socket).await;
    for id in ids.into_iter().flatten() {
        runtime.remove_container(pb::RemoveContainerRequest { name: id, force: true }).await.expect("rm -f");
    }
    (elapsed, shim_rss, daemon_rss)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
