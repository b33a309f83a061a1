//! Container runtime benchmark, against runc in the same run (release
//! build: `cargo bench -p shoal-cli --bench runtime`; needs root, runc,
//! docker-registry, skopeo and busybox-static):
//!
//! - 100 sequential `run --rm busybox /bin/true` through the daemon (create,
//!   start, wait, delete), and 100 `runc run` of an equivalent bundle (same
//!   busybox root filesystem, /bin/true); target: ours <= 0.5x runc's time.
//! - the same 100 through the CLI, a new `shoal run --rm` process each time
//!   as a user types it (target: <= 0.3x runc's time).
//! - 100 `exec /bin/true` into a running container, a new `shoal exec`
//!   process each time, against `runc exec` into a running runc container
//!   (target: <= 0.5x runc's time).
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
    let bundle = runc_bundle(&node);
    let runc = runc_runs(&node, &bundle);
    let ours_cli = cli_runs(&node, &image);
    let (ours_exec, runc_exec) = (cli_execs(&node, &image), runc_execs(&node, &bundle));
    let (parallel_start, shim_rss, daemon_rss) = runtime.block_on(parallel_starts(&node, &image));

    let per = |d: Duration| d.as_secs_f64() * 1000.0 / SEQUENTIAL as f64;
    println!();
    println!("{:<52} {:>12} {:>12}", "container runtime (this machine, same run)", "ours", "runc");
    println!("{:<52} {:>9.1} ms {:>9.1} ms", format!("run --rm /bin/true, create..delete, mean of {SEQUENTIAL}"), per(ours), per(runc));
    println!("{:<52} {:>12.2} {:>12}", "  ratio ours/runc (target <= 0.5)", per(ours) / per(runc), "");
    println!("{:<52} {:>9.1} ms {:>9.1} ms", format!("the same through the CLI, a process each, mean of {SEQUENTIAL}"), per(ours_cli), per(runc));
    println!("{:<52} {:>12.2} {:>12}", "  ratio ours/runc (target <= 0.3)", per(ours_cli) / per(runc), "");
    println!("{:<52} {:>9.1} ms {:>9.1} ms", format!("exec /bin/true into a running container, mean of {SEQUENTIAL}"), per(ours_exec), per(runc_exec));
    println!("{:<52} {:>12.2} {:>12}", "  ratio ours/runc (target <= 0.5)", per(ours_exec) / per(runc_exec), "");
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

/// A runc bundle over the same unpacked busybox layer as ours: the same
/// root filesystem, with runc's default spec running `args`.
fn runc_bundle(node: &LocalNode) -> std::path::PathBuf {
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
    bundle
}

fn runc(node: &LocalNode, args: &[&str], bundle: &Path) -> std::process::ExitStatus {
    Command::new("runc")
        .arg("--root")
        .arg(node.root.join("runc-state"))
        .args(args)
        .current_dir(bundle)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("runc")
}

/// `runc run` (create, start, wait, delete) of /bin/true, one after another.
fn runc_runs(node: &LocalNode, bundle: &Path) -> Duration {
    let run = |i: usize| {
        let id = format!("bench-{}-{i}", std::process::id());
        assert!(runc(node, &["run", &id], bundle).success(), "runc run failed");
    };
    run(usize::MAX);
    let started = Instant::now();
    for i in 0..SEQUENTIAL {
        run(i);
    }
    started.elapsed()
}

/// One `shoal` process, waited for directly (the test harness's runner
/// polls, which would add its polling interval to every call).
fn shoal(node: &LocalNode, args: &[&str]) {
    let status = Command::new(support::SHOAL)
        .args(node.host_args())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running shoal");
    assert!(status.success(), "shoal {args:?} failed");
}

/// `shoal run --rm IMAGE /bin/true` as a user types it: a CLI process each.
fn cli_runs(node: &LocalNode, image: &str) -> Duration {
    shoal(node, &["run", "--rm", image, "/bin/true"]);
    let started = Instant::now();
    for _ in 0..SEQUENTIAL {
        shoal(node, &["run", "--rm", image, "/bin/true"]);
    }
    started.elapsed()
}

/// `shoal exec` of /bin/true into a running container, a CLI process each.
fn cli_execs(node: &LocalNode, image: &str) -> Duration {
    node.shoal(&["run", "-d", "--name", "exec-bench", image, "sleep", "1000"]).ok();
    shoal(node, &["exec", "exec-bench", "/bin/true"]);
    let started = Instant::now();
    for _ in 0..SEQUENTIAL {
        shoal(node, &["exec", "exec-bench", "/bin/true"]);
    }
    let elapsed = started.elapsed();
    node.shoal(&["container", "rm", "-f", "exec-bench"]).ok();
    elapsed
}

/// `runc exec` of /bin/true into a running runc container of the same
/// root filesystem.
fn runc_execs(node: &LocalNode, bundle: &Path) -> Duration {
    let spec_path = bundle.join("config.json");
    let original = std::fs::read(&spec_path).unwrap();
    let mut spec: serde_json::Value = serde_json::from_slice(&original).unwrap();
    spec["process"]["args"] = serde_json::json!(["sleep", "1000"]);
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let id = format!("bench-exec-{}", std::process::id());
    assert!(runc(node, &["run", "-d", &id], bundle).success(), "runc run -d failed");
    std::fs::write(&spec_path, original).unwrap();
    assert!(runc(node, &["exec", &id, "/bin/true"], bundle).success(), "runc exec failed");
    let started = Instant::now();
    for _ in 0..SEQUENTIAL {
        assert!(runc(node, &["exec", &id, "/bin/true"], bundle).success(), "runc exec failed");
    }
    let elapsed = started.elapsed();
    let _ = runc(node, &["delete", "-f", &id], bundle);
    elapsed
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
