//! Health checks (docker's HEALTHCHECK) in real containers made from the
//! test images through the image store: needs root, busybox-static,
//! skopeo and cgroups. Short intervals, and waits on the health watch with
//! deadlines rather than sleeps. Each test checks that removing its
//! containers left no mounts or cgroups; a Drop guard sweeps up after a
//! failed test.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_runtime::container::{
    ContainerManager, CreateRequest, ExecOptions, Health, HealthConfig, HealthStatus, ImageInput, LogRotation, ManagerConfig,
};
use shoal_runtime::image::ImageStore;
use shoal_runtime::testing::TestImages;
use tokio::sync::watch;

#[path = "support/cleanup.rs"]
mod cleanup;
use cleanup::{container_cgroups, mounts_under};

/// Long enough for any probe sequence below on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(20);

struct Fixture {
    dir: tempfile::TempDir,
    cgroup_parent: String,
    busybox: ImageInput,
    /// busybox whose image config has a Healthcheck.
    checked: ImageInput,
    manager: Option<Arc<ContainerManager>>,
}

impl Fixture {
    async fn new(test: &str) -> Fixture {
        let dir = tempfile::Builder::new().prefix("shoal-health-").tempdir().expect("temp dir");
        let images = TestImages::shared().expect("build the test images");
        let store = ImageStore::open(dir.path().join("images"), Vec::new()).await.expect("open the image store");
        let mut inputs = Vec::new();
        for (tag, name) in [(TestImages::BUSYBOX, "docker.io/library/busybox:test"), (TestImages::HEALTHCHECK, "docker.io/library/checked:test")] {
            let archive = dir.path().join(format!("{tag}.tar"));
            images.oci_archive(tag, name, &archive).expect("export a test image");
            let loaded = store.load(&archive).await.expect("load a test image");
            inputs.push(ImageInput::from_store(&loaded[0], name));
        }
        let checked = inputs.pop().expect("two images");
        let busybox = inputs.pop().expect("two images");
        let cgroup_parent = format!("shoal-test-{}-health-{test}", std::process::id());
        let mut fixture = Fixture { dir, cgroup_parent, busybox, checked, manager: None };
        fixture.manager = Some(fixture.open().await);
        fixture
    }

    async fn open(&self) -> Arc<ContainerManager> {
        let root = self.dir.path();
        let config = ManagerConfig {
            root: root.join("containers"),
            volumes: root.join("volumes"),
            cgroup_parent: self.cgroup_parent.clone(),
            shim_command: vec![env!("CARGO_BIN_EXE_shoal-shim").into()],
            log_rotation: LogRotation::default(),
        };
        ContainerManager::open(config).await.expect("open the container manager")
    }

    fn manager(&self) -> &Arc<ContainerManager> {
        self.manager.as_ref().expect("manager open")
    }

    /// Starts `command` from `image` with `healthcheck`.
    async fn start(&self, image: &ImageInput, command: &[&str], healthcheck: Option<HealthConfig>) -> String {
        let request = CreateRequest { command: command.iter().map(|s| s.to_string()).collect(), healthcheck, ..Default::default() };
        let id = self.manager().create(request, image).await.expect("create");
        self.manager().start(&id).await.expect("start");
        id
    }

    /// Removes every container, then checks that nothing is left.
    async fn finish(mut self) {
        let manager = self.manager.take().expect("manager open");
        for container in manager.list(true) {
            manager.remove(&container.id, true).await.expect("remove at the end");
        }
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

fn check(test: &[&str], interval_ms: u64, retries: u32) -> HealthConfig {
    HealthConfig {
        test: test.iter().map(|s| s.to_string()).collect(),
        interval: Duration::from_millis(interval_ms),
        retries,
        ..Default::default()
    }
}

/// Every health the watch reports until `done` holds for one; all of them.
async fn watch_until(watch: &mut watch::Receiver<Health>, done: impl Fn(&Health) -> bool) -> Vec<Health> {
    let mut seen = vec![watch.borrow_and_update().clone()];
    let result = tokio::time::timeout(DEADLINE, async {
        while !done(seen.last().expect("one at least")) {
            watch.changed().await.expect("the monitor ended early");
            seen.push(watch.borrow_and_update().clone());
        }
    })
    .await;
    assert!(result.is_ok(), "the health never got there: {seen:#?}");
    seen
}

#[tokio::test]
async fn a_passing_probe_makes_it_healthy_through_starting() {
    let fx = Fixture::new("pass").await;
    let id = fx.start(&fx.busybox, &["sleep", "1000"], Some(check(&["CMD-SHELL", "echo fine"], 200, 3))).await;
    let mut watch = fx.manager().health_watch(&id).expect("a health check");
    let seen = watch_until(&mut watch, |h| h.status == HealthStatus::Healthy).await;
    assert_eq!(seen[0].status, HealthStatus::Starting, "{seen:#?}");
    let healthy = seen.last().expect("seen");
    assert_eq!(healthy.failing_streak, 0);
    let probe = healthy.log.last().expect("a probe result");
    assert_eq!((probe.exit_code, probe.output.as_str()), (0, "fine\n"));
    assert!(humantime::parse_rfc3339(&probe.start).is_ok() && humantime::parse_rfc3339(&probe.end).is_ok(), "{probe:?}");
    assert_eq!(fx.manager().health(&id).map(|h| h.status), Some(HealthStatus::Healthy));
    let listed = fx.manager().list(false);
    assert_eq!(listed[0].health, Some(HealthStatus::Healthy));
    let inspected = serde_json::to_value(fx.manager().inspect(&id).expect("inspect")).expect("json");
    assert_eq!(inspected["state"]["health"]["status"], "healthy", "{inspected}");
    assert_eq!(inspected["config"]["healthcheck"]["interval"], 200_000_000u64, "{inspected}");
    fx.finish().await;
}

#[tokio::test]
async fn failing_probes_make_it_unhealthy_after_the_retries() {
    let fx = Fixture::new("fail").await;
    let id = fx.start(&fx.busybox, &["sleep", "1000"], Some(check(&["CMD-SHELL", "echo broken >&2; exit 3"], 200, 3))).await;
    let mut watch = fx.manager().health_watch(&id).expect("a health check");
    let seen = watch_until(&mut watch, |h| h.status == HealthStatus::Unhealthy).await;
    // Not a probe early: starting with streaks 1 and 2, unhealthy at 3.
    for health in &seen {
        let expected = if health.failing_streak >= 3 { HealthStatus::Unhealthy } else { HealthStatus::Starting };
        assert_eq!(health.status, expected, "{seen:#?}");
    }
    let unhealthy = seen.last().expect("seen");
    assert_eq!(unhealthy.failing_streak, 3);
    assert_eq!(unhealthy.log.len(), 3);
    assert!(unhealthy.log.iter().all(|p| p.exit_code == 3 && p.output == "broken\n"), "{unhealthy:#?}");
    // It keeps probing: the streak grows and the log keeps the last five.
    let seen = watch_until(&mut watch, |h| h.failing_streak >= 6).await;
    assert_eq!(seen.last().expect("seen").log.len(), 5);
    fx.finish().await;
}

#[tokio::test]
async fn a_probe_past_its_timeout_is_killed_and_fails() {
    let fx = Fixture::new("timeout").await;
    let mut config = check(&["CMD", "sleep", "30"], 200, 1);
    config.timeout = Duration::from_millis(300);
    let id = fx.start(&fx.busybox, &["sleep", "1000"], Some(config)).await;
    let mut watch = fx.manager().health_watch(&id).expect("a health check");
    let seen = watch_until(&mut watch, |h| h.status == HealthStatus::Unhealthy).await;
    let probe = &seen.last().expect("seen").log[0];
    assert_eq!(probe.exit_code, -1, "{probe:?}");
    assert!(probe.output.contains("exceeded timeout (300ms)"), "{probe:?}");
    let took = humantime::parse_rfc3339(&probe.end).unwrap().duration_since(humantime::parse_rfc3339(&probe.start).unwrap()).unwrap();
    assert!(took < Duration::from_secs(5), "the probe ran {took:?}");
    // Three probes timed out; of them only the one running now may remain.
    watch_until(&mut watch, |h| h.failing_streak >= 3).await;
    let only_init = tokio::time::timeout(DEADLINE, async {
        loop {
            let processes = fx.manager().top(&id).expect("top");
            let probes = processes.iter().filter(|p| p.command.contains("sleep 30")).count();
            if probes <= 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(only_init.is_ok(), "timed-out probes were left running: {:?}", fx.manager().top(&id));
    fx.finish().await;
}

#[tokio::test]
async fn failures_in_the_start_period_do_not_count() {
    let fx = Fixture::new("start-period").await;
    let mut config = check(&["CMD", "false"], 200, 1);
    config.start_period = Duration::from_millis(1500);
    config.start_interval = Duration::from_millis(100);
    let id = fx.start(&fx.busybox, &["sleep", "1000"], Some(config)).await;
    let started = humantime::parse_rfc3339(&fx.manager().inspect(&id).expect("inspect").state.started_at.expect("started")).unwrap();
    let mut watch = fx.manager().health_watch(&id).expect("a health check");
    let seen = watch_until(&mut watch, |h| h.status == HealthStatus::Unhealthy).await;
    let shielded: Vec<&Health> = seen.iter().filter(|h| !h.log.is_empty() && h.status == HealthStatus::Starting).collect();
    // Probed every start interval (100ms) in the 1.5s start period, none counting.
    assert!(shielded.len() >= 3, "{seen:#?}");
    assert!(shielded.iter().all(|h| h.failing_streak == 0), "{seen:#?}");
    let unhealthy = seen.last().expect("seen");
    let counted = unhealthy.log.last().expect("a probe");
    let at = humantime::parse_rfc3339(&counted.start).unwrap().duration_since(started).unwrap();
    assert!(at >= Duration::from_millis(1500), "a failure {at:?} after the start counted: {seen:#?}");
    assert_eq!(unhealthy.failing_streak, 1);
    fx.finish().await;
}

#[tokio::test]
async fn the_image_healthcheck_applies_unless_turned_off() {
    let fx = Fixture::new("image").await;
    let command = ["sh", "-c", "touch /tmp/healthy && exec sleep 1000"];
    let id = fx.start(&fx.checked, &command, None).await;
    let record = fx.manager().inspect(&id).expect("inspect").config;
    let resolved = record.healthcheck.expect("the image's check");
    assert_eq!(resolved.test, TestImages::HEALTHCHECK_TEST);
    assert_eq!((resolved.interval, resolved.timeout, resolved.retries), (Duration::from_millis(200), Duration::from_secs(2), 2));
    let mut watch = fx.manager().health_watch(&id).expect("a health check");
    watch_until(&mut watch, |h| h.status == HealthStatus::Healthy).await;

    // `--no-healthcheck`.
    let off = fx.start(&fx.checked, &command, Some(check(&["NONE"], 0, 0))).await;
    assert!(fx.manager().health(&off).is_none() && fx.manager().health_watch(&off).is_none());
    let inspected = serde_json::to_value(fx.manager().inspect(&off).expect("inspect")).expect("json");
    assert!(inspected["state"].get("health").is_none(), "{inspected}");

    // Only durations given: the image's test with those on top.
    let mut durations = check(&[], 0, 5);
    durations.start_period = Duration::from_secs(60);
    let merged = fx.start(&fx.checked, &["sleep", "1000"], Some(durations)).await;
    let resolved = fx.manager().inspect(&merged).expect("inspect").config.healthcheck.expect("the image's check");
    assert_eq!((resolved.test.len(), resolved.interval, resolved.retries), (2, Duration::from_millis(200), 5));
    assert_eq!(resolved.start_period, Duration::from_secs(60));
    fx.finish().await;
}

#[tokio::test]
async fn probing_resumes_after_the_manager_reopens_and_ends_with_the_container() {
    let mut fx = Fixture::new("reopen").await;
    let command = ["sh", "-c", "touch /tmp/healthy && exec sleep 1000"];
    let id = fx.start(&fx.checked, &command, None).await;
    let mut watch = fx.manager().health_watch(&id).expect("a health check");
    watch_until(&mut watch, |h| h.status == HealthStatus::Healthy).await;

    // The daemon restarts: the recorded health stands, and probing goes on.
    drop(fx.manager.take());
    fx.manager = Some(fx.open().await);
    assert_eq!(fx.manager().health(&id).map(|h| h.status), Some(HealthStatus::Healthy));
    let mut watch = fx.manager().health_watch(&id).expect("a health check");
    let exec = ExecOptions { command: vec!["rm".into(), "/tmp/healthy".into()], ..Default::default() };
    let mut removal = fx.manager().exec(&id, exec).await.expect("exec");
    assert_eq!(removal.exit.wait().await.expect("exit"), 0);
    let seen = watch_until(&mut watch, |h| h.status == HealthStatus::Unhealthy).await;
    assert_eq!(seen.last().expect("seen").failing_streak, 2);

    // The container ends: unhealthy, and the monitor lets go of it.
    fx.manager().kill(&id, "KILL").await.expect("kill");
    fx.manager().wait(&id).await.expect("wait");
    assert_eq!(fx.manager().health(&id).map(|h| h.status), Some(HealthStatus::Unhealthy));
    fx.manager().remove(&id, false).await.expect("remove");
    let closed = tokio::time::timeout(DEADLINE, async {
        while watch.changed().await.is_ok() {}
    })
    .await;
    assert!(closed.is_ok(), "a health monitor outlived its container");
    fx.finish().await;
}

