//! Real containers from a busybox layer built here (no registry): needs
//! root, /bin/busybox (busybox-static) and cgroups. Each test has its own
//! directories and cgroup parent, and checks that removing its containers
//! left no mounts, cgroups or processes; a Drop guard sweeps up after a
//! failed test.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_runtime::container::{ContainerError, CreateRequest, Limits, LogOptions, LogStream, MountSpec, Status};
use tokio_stream::StreamExt;

#[path = "support/fixture.rs"]
mod fixture;
use fixture::{cleanup, Fixture};
use cleanup::CGROUP_ROOT;

fn cgroup_file(parent: &str, controller: &str, id: &str, file: &str) -> String {
    let path = Path::new(CGROUP_ROOT).join(controller).join(parent).join(id).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())).trim().to_string()
}

#[tokio::test]
async fn pid_one_is_the_command_and_host_processes_are_invisible() {
    let fx = Fixture::new("pid").await;
    let (exit, output) = fx.run(fx.request(&["cat", "/proc/1/cmdline"])).await;
    assert_eq!(exit.code, 0, "{output}");
    assert_eq!(output, "cat\0/proc/1/cmdline\0");
    let (_, output) = fx.sh("ls /proc | grep -c '^[0-9]'").await;
    let pids: u32 = output.trim().parse().unwrap();
    assert!(pids <= 3, "the container sees {pids} processes");
    fx.finish().await;
}

#[tokio::test]
async fn image_symlinks_cannot_redirect_mounts_to_the_host() {
    let mut fx = Fixture::new("symlinks").await;
    let host_dev = fx.dir.path().join("host-dev");
    let host_data = fx.dir.path().join("host-data");
    // A top layer whose /dev and /data point at host directories.
    let layer = fx.dir.path().join("symlink-layer");
    for dir in [&host_dev, &host_data, &layer] {
        std::fs::create_dir(dir).unwrap();
    }
    std::os::unix::fs::symlink(&host_dev, layer.join("dev")).unwrap();
    std::os::unix::fs::symlink(&host_data, layer.join("data")).unwrap();
    fx.image.layers.push(layer);
    let tmpfs = MountSpec::Tmpfs { target: "/data".into(), size_bytes: None, mode: None };
    let script = "echo x > /dev/null && echo y > /data/file && ls /dev/null /data/file";
    let (exit, output) = fx.run(CreateRequest { mounts: vec![tmpfs], ..fx.request(&["sh", "-c", script]) }).await;
    assert_eq!(exit.code, 0, "{output}");
    let leaked: Vec<_> = std::fs::read_dir(&host_dev).unwrap().chain(std::fs::read_dir(&host_data).unwrap()).collect();
    assert!(leaked.is_empty(), "the container's mounts reached the host: {leaked:?}");
    fx.finish().await;
}

#[tokio::test]
async fn a_dead_shim_launcher_is_replaced() {
    let fx = Fixture::new("launcher").await;
    assert_eq!(fx.sh("echo one").await.1, "one\n");
    let launcher = fx.manager().shim_launcher_pid().expect("shims are forked by a launcher");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(launcher as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert_eq!(fx.sh("echo two").await.1, "two\n");
    let replacement = fx.manager().shim_launcher_pid().expect("a new launcher");
    assert_ne!(replacement, launcher);
    // A forked shim can be told apart: its name, and its container's
    // directory as its working directory.
    let id = fx.start(fx.request(&["sleep", "30"])).await;
    let dir = fx.dir.path().join("containers").join(&id);
    let started: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("started.json")).unwrap()).unwrap();
    let shim = format!("/proc/{}", started["shim_pid"]);
    assert_eq!(std::fs::read_to_string(format!("{shim}/comm")).unwrap(), "shoal-shim\n");
    assert_eq!(std::fs::read_link(format!("{shim}/cwd")).unwrap(), dir);
    fx.manager().remove(&id, true).await.unwrap();
    fx.finish().await;
}

#[tokio::test]
async fn hostname_defaults_to_the_short_id() {
    let fx = Fixture::new("hostname").await;
    let id = fx.start(fx.request(&["hostname"])).await;
    fx.manager().wait(&id).await.unwrap();
    assert_eq!(fx.output(&id).await, format!("{}\n", &id[..12]));
    let request = CreateRequest { hostname: Some("web-1".into()), ..fx.request(&["hostname"]) };
    assert_eq!(fx.run(request).await.1, "web-1\n");
    fx.finish().await;
}

#[tokio::test]
async fn root_filesystem_writes_stay_in_their_container() {
    let fx = Fixture::new("rootfs").await;
    let (exit, output) = fx.sh("echo mine > /srv/written && cat /srv/from-layer && rm /srv/from-layer").await;
    assert_eq!((exit.code, output.as_str()), (0, "layer\n"));
    let layer = &fx.image.layers[0];
    assert!(!layer.join("srv/written").exists() && layer.join("srv/from-layer").exists(), "the layer changed");
    let (_, output) = fx.sh("ls /srv").await;
    assert_eq!(output, "from-layer\n", "another container sees the first one's changes");
    fx.finish().await;
}

#[tokio::test]
async fn read_only_root_refuses_writes() {
    let fx = Fixture::new("readonly").await;
    let request = CreateRequest { read_only: true, ..fx.request(&["touch", "/srv/x"]) };
    let (exit, output) = fx.run(request).await;
    assert_ne!(exit.code, 0);
    assert!(output.contains("Read-only file system"), "{output}");
    fx.finish().await;
}

#[tokio::test]
async fn tmpfs_mount_is_tmpfs_with_size_and_mode() {
    let fx = Fixture::new("tmpfs").await;
    let request = CreateRequest {
        mounts: vec![MountSpec::Tmpfs { target: "/scratch".into(), size_bytes: Some(8 << 20), mode: Some(0o700) }],
        ..fx.request(&["sh", "-c", "grep ' /scratch ' /proc/mounts; stat -c %a /scratch"])
    };
    let (exit, output) = fx.run(request).await;
    assert_eq!(exit.code, 0, "{output}");
    assert!(output.starts_with("tmpfs /scratch tmpfs") && output.contains("size=8192k"), "{output}");
    assert!(output.ends_with("700\n"), "{output}");
    fx.finish().await;
}

#[tokio::test]
async fn memory_limit_oom_kill_is_reported() {
    let fx = Fixture::new("oom").await;
    let request = CreateRequest { limits: Limits { memory_bytes: Some(32 << 20), ..Default::default() }, ..fx.request(&["tail", "/dev/zero"]) };
    let (exit, output) = fx.run(request).await;
    assert!(exit.oom_killed, "not reported as OOM: {exit:?} {output}");
    assert_eq!(exit.code, 137);
    fx.finish().await;
}

#[tokio::test]
async fn fork_bomb_is_contained_by_the_pids_limit() {
    let fx = Fixture::new("pids").await;
    // The subshell dies at its first failed fork; the outer shell then
    // execs (no fork needed) so the container keeps its pids.
    let script = "(i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done); echo spawned; exec sleep 30";
    let request = CreateRequest { limits: Limits { pids: Some(20), ..Default::default() }, ..fx.request(&["sh", "-c", script]) };
    let id = fx.start(request).await;
    let mut output = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !output.contains("spawned") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        output = fx.output(&id).await;
    }
    assert!(output.contains("can't fork") || output.contains("Resource temporarily unavailable"), "{output}");
    assert_eq!(cgroup_file(&fx.cgroup_parent, "pids", &id, "pids.max"), "20");
    let current: u32 = cgroup_file(&fx.cgroup_parent, "pids", &id, "pids.current").parse().unwrap();
    assert!(current <= 20, "{current} pids");
    // The host can still start processes.
    assert!(std::process::Command::new("/bin/true").status().unwrap().success());
    fx.manager().stop(&id, Duration::from_secs(1)).await.unwrap();
    fx.finish().await;
}

#[tokio::test]
async fn exit_codes_pass_through() {
    let fx = Fixture::new("exitcode").await;
    assert_eq!(fx.sh("exit 7").await.0.code, 7);
    assert_eq!(fx.run(fx.request(&["true"])).await.0.code, 0);
    fx.finish().await;
}

#[tokio::test]
async fn missing_command_is_a_clear_error_and_leaves_nothing() {
    let fx = Fixture::new("nocmd").await;
    let error = fx.manager().create(fx.request(&["/bin/nope"]), &fx.image).await.unwrap_err();
    assert!(matches!(error, ContainerError::CommandNotFound(_)), "{error:?}");
    assert!(error.to_string().contains("\"/bin/nope\""), "{error}");
    let error = fx.manager().create(fx.request(&["nope"]), &fx.image).await.unwrap_err();
    assert!(error.to_string().contains("PATH"), "{error}");
    assert!(fx.manager().list(true).is_empty());
    fx.finish().await;
}

#[tokio::test]
async fn bad_mounts_are_clear_errors_and_leave_nothing() {
    let fx = Fixture::new("badmount").await;
    let missing = fx.dir.path().join("missing");
    let request = CreateRequest {
        mounts: vec![MountSpec::Bind { source: missing.clone(), target: "/x".into(), readonly: false }],
        ..fx.request(&["true"])
    };
    let error = fx.manager().create(request, &fx.image).await.unwrap_err();
    assert!(matches!(error, ContainerError::MountSourceMissing(_)), "{error:?}");
    assert!(error.to_string().contains(&missing.display().to_string()), "{error}");
    let request = CreateRequest {
        mounts: vec![MountSpec::Volume { name: "../etc".into(), target: "/x".into(), readonly: false }],
        ..fx.request(&["true"])
    };
    assert!(matches!(fx.manager().create(request, &fx.image).await, Err(ContainerError::InvalidMount(_))));
    fx.finish().await;
}

#[tokio::test]
async fn stop_gives_a_grace_period_then_kills() {
    let fx = Fixture::new("stop").await;
    let id = fx.start(fx.request(&["sh", "-c", "trap 'exit 3' TERM; echo ready; while true; do sleep 0.1; done"])).await;
    wait_for_output(&fx, &id, "ready").await;
    let begun = Instant::now();
    fx.manager().stop(&id, Duration::from_secs(10)).await.unwrap();
    assert!(begun.elapsed() < Duration::from_secs(3), "took {:?}", begun.elapsed());
    assert_eq!(fx.manager().wait(&id).await.unwrap().code, 3);

    let id = fx.start(fx.request(&["sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.1; done"])).await;
    wait_for_output(&fx, &id, "ready").await;
    let begun = Instant::now();
    fx.manager().stop(&id, Duration::from_secs(1)).await.unwrap();
    let took = begun.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(fx.manager().wait(&id).await.unwrap().code, 137);
    assert_eq!(fx.manager().inspect(&id).unwrap().state.status, Status::Exited);
    fx.finish().await;
}

async fn wait_for_output(fx: &Fixture, id: &str, text: &str) {
    let options = LogOptions { follow: true, ..Default::default() };
    let mut logs = fx.manager().logs(id, options).unwrap();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(entry) = logs.next().await {
            if String::from_utf8_lossy(&entry.bytes).contains(text) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "{text:?} never appeared");
}

#[tokio::test]
async fn cpu_quota_is_written() {
    let fx = Fixture::new("cpus").await;
    let request = CreateRequest { limits: Limits { nano_cpus: Some(500_000_000), ..Default::default() }, ..fx.request(&["sleep", "30"]) };
    let id = fx.start(request).await;
    assert_eq!(cgroup_file(&fx.cgroup_parent, "cpu", &id, "cpu.cfs_quota_us"), "50000");
    assert_eq!(cgroup_file(&fx.cgroup_parent, "cpu", &id, "cpu.cfs_period_us"), "100000");
    let limits = fx.manager().inspect(&id).unwrap().limits;
    assert_eq!(limits.cpus, Some(0.5));
    fx.manager().remove(&id, true).await.unwrap();
    fx.finish().await;
}

#[tokio::test]
async fn users_resolve_against_the_image() {
    let fx = Fixture::new("user").await;
    for (user, expected) in [
        ("app", "1000 1000 1000 50\n"),
        ("1000", "1000 1000 1000 50\n"),
        ("1000:50", "1000 50 50\n"),
        ("app:staff", "1000 50 50\n"),
        ("4242:4242", "4242 4242 4242\n"),
    ] {
        let request = CreateRequest { user: Some(user.into()), ..fx.request(&["sh", "-c", "echo $(id -u) $(id -g) $(id -G)"]) };
        let (exit, output) = fx.run(request).await;
        assert_eq!((exit.code, output.as_str()), (0, expected), "user {user}");
    }
    let request = CreateRequest { user: Some("ghost".into()), ..fx.request(&["true"]) };
    let error = fx.manager().create(request, &fx.image).await.unwrap_err();
    assert!(error.to_string().contains("ghost"), "{error}");
    fx.finish().await;
}

#[tokio::test]
async fn env_workdir_and_labels() {
    let fx = Fixture::new("env").await;
    let request = CreateRequest {
        env: vec!["FOO=bar".into(), "FROM_IMAGE=overridden".into()],
        workdir: Some("/srv".into()),
        labels: [("team".to_string(), "fish".to_string())].into(),
        ..fx.request(&["sh", "-c", "echo $FOO $FROM_IMAGE $HOME; pwd"])
    };
    let id = fx.start(request).await;
    fx.manager().wait(&id).await.unwrap();
    assert_eq!(fx.output(&id).await, "bar overridden /root\n/srv\n");
    let details = fx.manager().inspect(&id).unwrap();
    assert_eq!(details.labels.get("team").map(String::as_str), Some("fish"));
    assert_eq!(details.labels.get("from").map(String::as_str), Some("image"));
    assert!(serde_json::to_string(&details).unwrap().contains("\"exited\""));
    fx.finish().await;
}

#[tokio::test]
async fn named_volume_persists_and_bind_mount_shares() {
    let fx = Fixture::new("volumes").await;
    let volume = MountSpec::Volume { name: "data".into(), target: "/data".into(), readonly: false };
    let request = CreateRequest { mounts: vec![volume.clone()], ..fx.request(&["sh", "-c", "echo kept > /data/file"]) };
    assert_eq!(fx.run(request).await.0.code, 0);
    assert!(fx.dir.path().join("volumes/data/_data/file").exists());
    let request = CreateRequest { mounts: vec![volume], ..fx.request(&["cat", "/data/file"]) };
    assert_eq!(fx.run(request).await.1, "kept\n");

    let host = fx.dir.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in"), "from host\n").unwrap();
    let bind = MountSpec::Bind { source: host.clone(), target: "/host".into(), readonly: false };
    let request = CreateRequest { mounts: vec![bind], ..fx.request(&["sh", "-c", "cat /host/in; echo back > /host/out"]) };
    assert_eq!(fx.run(request).await.1, "from host\n");
    assert_eq!(std::fs::read_to_string(host.join("out")).unwrap(), "back\n");
    let bind = MountSpec::Bind { source: host.clone(), target: "/host".into(), readonly: true };
    let request = CreateRequest { mounts: vec![bind], ..fx.request(&["touch", "/host/x"]) };
    assert_ne!(fx.run(request).await.0.code, 0);
    fx.finish().await;
}

/// A container starts with no signal blocked or ignored, whatever the
/// daemon inherited: here the process starting everything blocks SIGTERM
/// and ignores SIGUSR1 and a real-time signal, as a harness or a service
/// manager might. A blocked SIGTERM would make every stop wait out its
/// grace period.
#[tokio::test]
async fn the_container_starts_with_no_signal_blocked_or_ignored() {
    use nix::sys::signal::{signal, SigHandler, SigSet, Signal};
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGTERM);
    blocked.thread_block().expect("blocking SIGTERM");
    // SAFETY: SIG_IGN runs no code.
    unsafe {
        signal(Signal::SIGUSR1, SigHandler::SigIgn).expect("ignoring SIGUSR1");
        libc::signal(libc::SIGRTMIN() + 1, libc::SIG_IGN);
    }
    let fx = Fixture::new("signals").await;
    let (exit, output) = fx.run(fx.request(&["cat", "/proc/self/status"])).await;
    assert_eq!(exit.code, 0, "{output}");
    for field in ["SigBlk:", "SigIgn:"] {
        let line = output.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} in {output}"));
        let mask = u64::from_str_radix(line[field.len()..].trim(), 16).expect("a hex mask");
        assert_eq!(mask, 0, "{line}");
    }
    fx.finish().await;
}

/// A file bind mount (the embedded DNS's resolv.conf) lands on a file the
/// image has, on one it lacks (created, directories too) and on a
/// read-only root, read-only where asked.
#[tokio::test]
async fn file_bind_mounts_land_on_present_and_missing_files() {
    let fx = Fixture::new("filebind").await;
    let resolv_conf = fx.dir.path().join("resolv.conf");
    std::fs::write(&resolv_conf, "nameserver 127.0.0.11\n").unwrap();
    let file = |target: &str| MountSpec::Bind { source: resolv_conf.clone(), target: target.into(), readonly: true };
    let mounts = vec![file("/etc/resolv.conf"), file("/srv/from-layer"), file("/new/dir/file")];
    let script = "cat /etc/resolv.conf /srv/from-layer /new/dir/file; echo x > /etc/resolv.conf || echo refused";
    for read_only in [false, true] {
        let request = CreateRequest { mounts: mounts.clone(), read_only, ..fx.request(&["sh", "-c", script]) };
        let (exit, output) = fx.run(request).await;
        assert_eq!(exit.code, 0, "{output}");
        assert!(output.starts_with("nameserver 127.0.0.11\nnameserver 127.0.0.11\nnameserver 127.0.0.11\n"), "read_only={read_only}: {output}");
        assert!(output.lines().any(|l| l == "refused"), "the file is read-only: {output}");
    }
    assert_eq!(std::fs::read_to_string(&resolv_conf).unwrap(), "nameserver 127.0.0.11\n");
    fx.finish().await;
}

#[tokio::test]
async fn isolation_capabilities_seccomp_and_loopback() {
    let fx = Fixture::new("isolation").await;
    let script = "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
                  cat /sys/class/net/lo/flags; ls /sys/class/net; \
                  unshare -n true 2>&1 || echo unshare refused; \
                  wc -c < /proc/timer_list; echo 1 > /proc/sys/kernel/domainname 2>&1 || echo sys read-only; \
                  ls /dev | tr '\\n' ' '";
    let (exit, output) = fx.sh(script).await;
    assert_eq!(exit.code, 0, "{output}");
    assert!(output.contains("CapEff:\t00000000a80425fb"), "not docker's capabilities: {output}");
    assert!(output.contains("NoNewPrivs:\t1") && output.contains("Seccomp:\t2"), "{output}");
    assert!(output.contains("0x9\nlo\n"), "loopback not up or host links visible: {output}");
    assert!(output.contains("unshare refused") && output.contains("sys read-only"), "{output}");
    assert!(output.contains("\n0\n"), "/proc/timer_list not masked: {output}");
    for device in ["null", "zero", "urandom", "pts", "shm", "mqueue"] {
        assert!(output.contains(&format!("{device} ")), "/dev/{device} missing: {output}");
    }
    fx.finish().await;
}

#[tokio::test]
async fn names_are_unique_and_containers_found_by_prefix() {
    let fx = Fixture::new("names").await;
    let request = CreateRequest { name: Some("web".into()), ..fx.request(&["true"]) };
    let id = fx.manager().create(request.clone(), &fx.image).await.unwrap();
    let error = fx.manager().create(request, &fx.image).await.unwrap_err();
    assert!(matches!(error, ContainerError::NameInUse(_)), "{error:?}");
    assert_eq!(fx.manager().inspect(&id[..8]).unwrap().name, "web");
    assert_eq!(fx.manager().inspect("web").unwrap().state.status, Status::Created);
    assert!(fx.manager().images_in_use().contains("sha256:busybox-test"));
    assert!(matches!(fx.manager().inspect("nothere"), Err(ContainerError::NotFound(_))));
    assert!(fx.manager().list(false).is_empty() && fx.manager().list(true).len() == 1);
    fx.finish().await;
}

#[tokio::test]
async fn remove_refuses_a_running_container_unless_forced() {
    let fx = Fixture::new("remove").await;
    let id = fx.start(fx.request(&["sleep", "30"])).await;
    assert!(matches!(fx.manager().remove(&id, false).await, Err(ContainerError::Running(_))));
    fx.manager().remove(&id, true).await.unwrap();
    assert!(fx.manager().list(true).is_empty());
    fx.finish().await;
}

#[tokio::test]
async fn auto_remove_and_logs_streams() {
    let fx = Fixture::new("autorm").await;
    let request = CreateRequest { auto_remove: true, ..fx.request(&["sh", "-c", "echo out; echo err >&2; printf partial"]) };
    let id = fx.manager().create(request, &fx.image).await.unwrap();
    let logs = fx.manager().logs(&id, LogOptions { follow: true, tail: None, timestamps: true }).unwrap();
    fx.manager().start(&id).await.unwrap();
    let entries: Vec<_> = tokio::time::timeout(Duration::from_secs(10), logs.collect()).await.expect("follow ends at exit");
    let mut got: Vec<(LogStream, String)> = entries.iter().map(|e| (e.stream, String::from_utf8_lossy(&e.bytes).into_owned())).collect();
    got.sort();
    assert_eq!(
        got,
        vec![(LogStream::Stdout, "out\n".into()), (LogStream::Stdout, "partial".into()), (LogStream::Stderr, "err\n".into())]
    );
    assert!(entries.iter().all(|e| e.time_rfc3339().is_some()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fx.manager().list(true).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fx.manager().list(true).is_empty(), "--rm container still listed");
    fx.finish().await;
}

#[tokio::test]
async fn containers_survive_a_daemon_restart() {
    let mut fx = Fixture::new("restore").await;
    let script = "trap 'exit 5' TERM; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done";
    let id = fx.start(fx.request(&["sh", "-c", script])).await;
    wait_for_output(&fx, &id, "tick 2").await;
    // The daemon dies: its manager, pidfds and log readers go away.
    drop(fx.manager.take());
    tokio::time::sleep(Duration::from_millis(300)).await;
    fx.manager = Some(fx.open().await);
    let listed = fx.manager().list(false);
    assert_eq!(listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec![id.as_str()]);
    let before = fx.output(&id).await.lines().count();
    wait_for_output(&fx, &id, &format!("tick {}", before + 3)).await;
    fx.manager().stop(&id, Duration::from_secs(5)).await.unwrap();
    let exit = fx.manager().wait(&id).await.unwrap();
    assert_eq!(exit.code, 5);
    fx.finish().await;
}

#[tokio::test]
async fn parallel_starts() {
    let fx = Arc::new(Fixture::new("parallel").await);
    let mut tasks = Vec::new();
    for n in 0..10 {
        let fx = fx.clone();
        tasks.push(tokio::spawn(async move { fx.sh(&format!("exit {n}")).await.0.code }));
    }
    for (n, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), n as i32);
    }
    let fx = Arc::try_unwrap(fx).ok().expect("tasks done");
    fx.finish().await;
}
