//! docker's process options on real containers: capabilities added and
//! dropped, namespaced sysctls, ulimits, `--init` as PID 1 (signals reach
//! a command that ignores them as PID 1; orphans are reaped), and
//! `--add-host` lines in /etc/hosts. Needs root, busybox-static, cgroups.

use std::time::{Duration, Instant};

use shoal_runtime::container::{CreateRequest, ProcessOptions, Ulimit};

#[path = "support/fixture.rs"]
mod fixture;
use fixture::Fixture;

fn with(fx: &Fixture, script: &str, options: ProcessOptions) -> CreateRequest {
    CreateRequest { options, ..fx.request(&["sh", "-c", script]) }
}

/// The effective capability mask of the container's shell.
fn cap_eff(output: &str) -> u64 {
    let line = output.lines().find(|l| l.starts_with("CapEff:")).unwrap_or_else(|| panic!("no CapEff in {output}"));
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).expect("hex mask")
}

#[tokio::test]
async fn capabilities_are_added_and_dropped_over_docker_s_set() {
    let fx = Fixture::new("caps").await;
    const CHOWN: u64 = 1 << 0;
    const NET_ADMIN: u64 = 1 << 12;
    let options = ProcessOptions { cap_add: vec!["NET_ADMIN".into()], cap_drop: vec!["chown".into()], ..Default::default() };
    let script = "grep CapEff /proc/self/status; ip link set lo mtu 1280 && echo mtu-set; touch /tmp/f; chown 1000 /tmp/f 2>/dev/null || echo chown-refused";
    let (exit, output) = fx.run(with(&fx, script, options)).await;
    assert_eq!(exit.code, 0, "{output}");
    let mask = cap_eff(&output);
    assert!(mask & NET_ADMIN != 0 && mask & CHOWN == 0, "{mask:x}: {output}");
    assert!(output.contains("mtu-set") && output.contains("chown-refused"), "{output}");

    // Without options: docker's set, where both are the other way round.
    let (_, output) = fx.sh(script).await;
    let mask = cap_eff(&output);
    assert!(mask & NET_ADMIN == 0 && mask & CHOWN != 0, "{mask:x}: {output}");
    assert!(!output.contains("mtu-set") && !output.contains("chown-refused"), "{output}");
    fx.finish().await;
}

#[tokio::test]
async fn sysctls_and_ulimits_reach_the_container_and_not_the_host() {
    let fx = Fixture::new("sysctl").await;
    let host_somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap();
    let wanted = if host_somaxconn.trim() == "1234" { "1235" } else { "1234" };
    let options = ProcessOptions {
        sysctls: [("net.core.somaxconn".to_string(), wanted.to_string())].into(),
        ulimits: vec![Ulimit { name: "nofile".into(), soft: 321, hard: 654 }],
        ..Default::default()
    };
    let (exit, output) = fx.run(with(&fx, "cat /proc/sys/net/core/somaxconn; ulimit -n; ulimit -Hn", options)).await;
    assert_eq!(exit.code, 0, "{output}");
    assert_eq!(output.split_whitespace().collect::<Vec<_>>(), [wanted, "321", "654"], "{output}");
    assert_eq!(std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap(), host_somaxconn, "the host's value is untouched");

    // A sysctl that is not namespaced is refused at create, naming it.
    let options = ProcessOptions { sysctls: [("vm.swappiness".to_string(), "1".to_string())].into(), ..Default::default() };
    let err = fx.manager().create(with(&fx, "true", options), &fx.image).await.unwrap_err().to_string();
    assert!(err.contains("vm.swappiness"), "{err}");
    fx.finish().await;
}

#[tokio::test]
async fn init_forwards_signals_and_reaps_orphans() {
    let fx = Fixture::new("init").await;
    let init = ProcessOptions { init: true, ..Default::default() };
    // The command is not PID 1 under --init.
    let (exit, output) = fx.run(with(&fx, "echo $$", init.clone())).await;
    assert_eq!(exit.code, 0);
    assert_ne!(output.trim(), "1", "the command runs under the reaper");

    // `sleep` as PID 1 ignores SIGTERM (no handler); under --init it gets
    // it from the reaper and stops at once, exit 128 + 15.
    let id = fx.start(CreateRequest { options: init.clone(), ..fx.request(&["sleep", "1000"]) }).await;
    let begun = Instant::now();
    fx.manager().stop(&id, Duration::from_secs(10)).await.unwrap();
    assert!(begun.elapsed() < Duration::from_secs(3), "stop waited for the kill: {:?}", begun.elapsed());
    assert_eq!(fx.manager().wait(&id).await.unwrap().code, 143);

    // Orphans are reaped: a background child whose parent exits leaves no zombie.
    let script = "sh -c 'sleep 0.2 &' ; sleep 1; grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l";
    let (exit, output) = fx.run(with(&fx, script, init)).await;
    assert_eq!(exit.code, 0, "{output}");
    assert_eq!(output.trim(), "0", "zombies left: {output}");
    fx.finish().await;
}

#[tokio::test]
async fn added_hosts_are_in_etc_hosts() {
    let fx = Fixture::new("hosts").await;
    let options = ProcessOptions { extra_hosts: vec![("db.test".into(), "198.18.0.5".into())], ..Default::default() };
    let (exit, output) = fx.run(with(&fx, "cat /etc/hosts; ping -c1 -W1 db.test 2>&1 | head -1", options)).await;
    assert_eq!(exit.code, 0, "{output}");
    assert!(output.contains("127.0.0.1\tlocalhost") && output.contains("198.18.0.5\tdb.test"), "{output}");
    assert!(output.contains("PING db.test (198.18.0.5)"), "the name resolves: {output}");
    fx.finish().await;
}

