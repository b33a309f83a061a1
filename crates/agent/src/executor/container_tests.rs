//! A task worker against real containers: needs root, cgroups, busybox
//! and a built `shoal` binary for the containers' shim. `cargo nextest run
//! --workspace` (the README's test command) builds it before running any
//! test; alone: `cargo build -p shoal-cli && cargo test -p shoal-agent`.
//! (`SHOAL_BIN` names another `shoal` binary.)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::pb;
use shoal_runtime::container::{ContainerManager, ManagerConfig};
use shoal_runtime::image::{ImageStore, Reference};
use tokio::sync::{mpsc, watch};

use super::runtime_ops::{containers_of, remove_all_task_containers};
use super::worker::{run_task, WorkerContext};

const IMAGE: &str = "executor-test:local";

struct Node {
    dir: PathBuf,
    /// Containers' cgroups go under it, in every hierarchy; removed at the end.
    cgroup_parent: String,
    containers: Arc<ContainerManager>,
    ctx: Arc<WorkerContext>,
    reports: mpsc::Receiver<pb::TaskStatusUpdate>,
}

/// The `shoal` binary of the same build: tests run from
/// `target/<profile>/deps/`, the binary sits in `target/<profile>/`.
fn shoal_binary() -> PathBuf {
    if let Ok(path) = std::env::var("SHOAL_BIN") {
        return path.into();
    }
    let test_exe = std::env::current_exe().expect("the test binary's path");
    let binary = test_exe.parent().and_then(Path::parent).map(|profile| profile.join("shoal"));
    match binary {
        Some(binary) if binary.is_file() => binary,
        _ => panic!("no shoal binary next to {}; run `cargo build -p shoal-cli` first, or set SHOAL_BIN", test_exe.display()),
    }
}

async fn node(name: &str) -> Node {
    let dir = std::env::temp_dir().join(format!("shoal-executor-test-{name}-{}", std::process::id()));
    let cgroup_parent = format!("shoal-executor-test-{name}-{}", std::process::id());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
    std::fs::copy(which_busybox(), dir.join("rootfs/bin/busybox")).unwrap();
    for applet in ["sh", "sleep", "echo", "hostname"] {
        std::os::unix::fs::symlink("busybox", dir.join("rootfs/bin").join(applet)).unwrap();
    }
    let tar = dir.join("rootfs.tar");
    let status = std::process::Command::new("tar").arg("-C").arg(dir.join("rootfs")).arg("-cf").arg(&tar).arg(".").status().unwrap();
    assert!(status.success());
    let images = ImageStore::open(dir.join("image"), Vec::new()).await.unwrap();
    images.import(&tar, &Reference::parse(IMAGE).unwrap(), vec!["sh".into()]).await.unwrap();
    let containers = ContainerManager::open(ManagerConfig {
        root: dir.join("containers"),
        volumes: dir.join("volumes"),
        cgroup_parent: cgroup_parent.clone(),
        shim_command: vec![shoal_binary().into(), "__shim".into()],
        log_rotation: Default::default(),
    })
    .await
    .unwrap();
    let (reports, receiver) = mpsc::channel(64);
    let runtime = super::TaskRuntime { images, containers: containers.clone(), networks: None, task_files: dir.join("task-files") };
    let ctx = Arc::new(WorkerContext { node_id: "node1".into(), backend: Arc::new(runtime), reports, files: Default::default() });
    Node { dir, cgroup_parent, containers, ctx, reports: receiver }
}

impl Drop for Node {
    /// Also when a test fails: its containers (processes, mounts, cgroups)
    /// go first, then the directory. The runtime's calls are async and a
    /// test's runtime may be mid-panic, so this runs on a thread of its own.
    fn drop(&mut self) {
        let containers = self.containers.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
            runtime.block_on(remove_all_task_containers(&containers));
        });
        let _ = cleanup.join();
        let _ = std::fs::remove_dir_all(&self.dir);
        // The containers' own cgroups went with them; their parent is ours.
        let parents = std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten().map(|h| h.path().join(&self.cgroup_parent));
        for parent in parents.chain([PathBuf::from("/sys/fs/cgroup").join(&self.cgroup_parent)]) {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

fn which_busybox() -> PathBuf {
    ["/usr/bin/busybox", "/bin/busybox"].into_iter().map(PathBuf::from).find(|p| p.exists()).expect("busybox is installed")
}

fn assignment(task_id: &str, image: &str, args: &[&str], desired: &str) -> pb::Assignment {
    pb::Assignment {
        task_id: task_id.into(),
        name: format!("svc.{task_id}"),
        service_id: "s1".into(),
        service_name: "svc".into(),
        slot: 1,
        spec: Some(pb::TaskSpec {
            image: image.into(),
            entrypoint: vec!["sh".into(), "-c".into()],
            args: args.iter().map(|s| s.to_string()).collect(),
            hostname: "{{.Service.Name}}-{{.Task.Slot}}".into(),
            stop_grace_ms: 2000,
            ..Default::default()
        }),
        desired_state: desired.into(),
        version: 1,
        node_hostname: "host".into(),
        observed_state: String::new(),
        networks: Vec::new(),
    }
}

/// Reports until (and including) `last`, or panics after a while.
async fn reports_until(node: &mut Node, last: &str) -> Vec<pb::TaskStatusUpdate> {
    let mut seen = Vec::new();
    loop {
        let update = tokio::time::timeout(Duration::from_secs(60), node.reports.recv())
            .await
            .unwrap_or_else(|_| panic!("no {last} report; got {seen:?}"))
            .expect("reports channel open");
        let done = update.state == last;
        seen.push(update);
        if done {
            return seen;
        }
    }
}

fn states(updates: &[pb::TaskStatusUpdate]) -> Vec<&str> {
    updates.iter().map(|u| u.state.as_str()).collect()
}

#[tokio::test]
async fn a_task_runs_to_completion_and_its_container_goes_with_it() {
    let mut node = node("complete").await;
    let (sender, receiver) = watch::channel(assignment("t1", IMAGE, &["echo hi from $(hostname)"], "running"));
    let worker = tokio::spawn(run_task(node.ctx.clone(), receiver));
    let updates = reports_until(&mut node, "complete").await;
    assert_eq!(states(&updates), ["accepted", "preparing", "starting", "running", "complete"]);
    let running = &updates[3];
    assert!(!running.container_id.is_empty());
    assert_eq!(updates[4].exit_code, Some(0));
    let logs = node.containers.logs(&running.container_id, Default::default()).unwrap();
    let lines: Vec<_> = tokio_stream::StreamExt::collect::<Vec<_>>(logs).await;
    assert_eq!(String::from_utf8_lossy(&lines[0].bytes), "hi from svc-1\n");
    // The ended task keeps its container until the managers drop the task.
    assert_eq!(containers_of(&node.containers, "t1").len(), 1);
    drop(sender);
    worker.await.unwrap();
    remove_all_task_containers(&node.containers).await;
    assert!(containers_of(&node.containers, "t1").is_empty());
}

#[tokio::test]
async fn a_failing_task_reports_its_exit_code() {
    let mut node = node("failed").await;
    let (_sender, receiver) = watch::channel(assignment("t2", IMAGE, &["exit 3"], "running"));
    tokio::spawn(run_task(node.ctx.clone(), receiver));
    let updates = reports_until(&mut node, "failed").await;
    let failed = updates.last().unwrap();
    assert_eq!(failed.error, "task: non-zero exit (3)");
    assert_eq!(failed.exit_code, Some(3));
    remove_all_task_containers(&node.containers).await;
}

#[tokio::test]
async fn shutdown_stops_the_container() {
    let mut node = node("shutdown").await;
    let (sender, receiver) = watch::channel(assignment("t3", IMAGE, &["sleep 1000"], "running"));
    tokio::spawn(run_task(node.ctx.clone(), receiver));
    reports_until(&mut node, "running").await;
    sender.send_modify(|a| a.desired_state = "shutdown".into());
    let updates = reports_until(&mut node, "shutdown").await;
    assert_eq!(states(&updates), ["shutdown"]);
    remove_all_task_containers(&node.containers).await;
}

#[tokio::test]
async fn a_missing_image_rejects_the_task() {
    let mut node = node("rejected").await;
    // A registry that refuses connections at once.
    let (_sender, receiver) = watch::channel(assignment("t4", "127.0.0.1:1/nothing:here", &["true"], "running"));
    tokio::spawn(run_task(node.ctx.clone(), receiver));
    let updates = reports_until(&mut node, "rejected").await;
    let rejected = updates.last().unwrap();
    assert!(rejected.error.contains("127.0.0.1:1"), "{}", rejected.error);
}

#[tokio::test]
async fn a_running_container_is_adopted_by_a_new_worker() {
    let mut node = node("adopt").await;
    let (sender, receiver) = watch::channel(assignment("t5", IMAGE, &["sleep 1000"], "running"));
    let first = tokio::spawn(run_task(node.ctx.clone(), receiver));
    let container = reports_until(&mut node, "running").await.pop().unwrap().container_id;
    // As after a daemon restart: the worker is gone, the container runs.
    first.abort();
    drop(sender);
    let (_sender, receiver) = watch::channel(assignment("t5", IMAGE, &["sleep 1000"], "running"));
    tokio::spawn(run_task(node.ctx.clone(), receiver));
    let updates = reports_until(&mut node, "running").await;
    assert_eq!(states(&updates), ["running"]);
    assert_eq!(updates[0].container_id, container, "watched, not duplicated");
    assert_eq!(containers_of(&node.containers, "t5").len(), 1);
    remove_all_task_containers(&node.containers).await;
}

#[tokio::test]
async fn an_ended_task_keeps_its_container_for_logs_after_a_restart() {
    let mut node = node("ended").await;
    let (sender, receiver) = watch::channel(assignment("t6", IMAGE, &["echo bye; exit 2"], "running"));
    let first = tokio::spawn(run_task(node.ctx.clone(), receiver));
    let container = reports_until(&mut node, "failed").await.pop().unwrap().container_id;
    first.abort();
    drop(sender);
    // As after a daemon restart: the managers resend the ended task, now
    // desired shut down, with the state they recorded.
    let mut ended = assignment("t6", IMAGE, &["echo bye; exit 2"], "shutdown");
    ended.observed_state = "failed".into();
    let (_sender, receiver) = watch::channel(ended);
    tokio::spawn(run_task(node.ctx.clone(), receiver));
    let report = tokio::time::timeout(Duration::from_millis(300), node.reports.recv()).await;
    assert!(report.is_err(), "an ended task reports nothing more: {report:?}");
    let kept = containers_of(&node.containers, "t6");
    assert_eq!(kept.iter().map(|c| c.container_id.as_str()).collect::<Vec<_>>(), [container.as_str()]);
    let logs = node.containers.logs(&container, Default::default()).unwrap();
    let lines: Vec<_> = tokio_stream::StreamExt::collect::<Vec<_>>(logs).await;
    assert_eq!(String::from_utf8_lossy(&lines[0].bytes), "bye\n");
}
