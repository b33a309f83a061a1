//! Health checks through `shoal run`'s `--health-*` flags and a real
//! daemon: the status in `container ls` reads as docker's, `inspect` shows
//! the probe log, and bad flags are refused with one sentence before
//! anything is created.

use std::time::Duration;

use crate::support::node::{registry_with_busybox, LocalNode};
use crate::support::{wait_until, Output};

#[track_caller]
fn refused(out: &Output, needle: &str) {
    assert!(!out.success(), "`{}` succeeded", out.command);
    assert!(out.stderr.contains(needle), "`{}`: expected {needle:?} in:\n{}", out.command, out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "not one sentence:\n{}", out.stderr);
}

/// `container ls`'s status column of the container `name`.
fn status_of(node: &LocalNode, name: &str) -> String {
    let filter = format!("name={name}");
    node.shoal(&["container", "ls", "-a", "-f", &filter, "--format", "{{.Status}}"]).ok().stdout.trim().to_string()
}

#[test]
fn run_health_flags_show_in_ls_and_inspect_and_bad_ones_are_refused() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("health");
    node.shoal(&["image", "pull", &busybox.reference]).ok();
    let image = busybox.reference.as_str();

    let bad: [(&[&str], &str); 5] = [
        (&["--health-cmd", "true", "--health-retries", "0"], "--health-retries \"0\" is invalid"),
        (&["--health-cmd", "true", "--health-interval", "0s"], "--health-interval \"0s\""),
        (&["--health-cmd", "true", "--health-timeout", "-1s"], "--health-timeout \"-1s\" is negative"),
        (&["--health-cmd", "true", "--health-interval", "soon"], "--health-interval \"soon\" is invalid"),
        (&["--no-healthcheck", "--health-cmd", "true"], "--no-healthcheck conflicts with --health-cmd"),
    ];
    for (flags, needle) in bad {
        let mut args = vec!["run", "-d", "--name", "bad"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[image, "sleep", "1000"]);
        refused(&node.shoal(&args), needle);
    }
    assert_eq!(node.shoal(&["container", "ls", "-a", "-q"]).ok().stdout.trim(), "", "a refused run created a container");

    let run = |name: &str, flags: &[&str]| {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[image, "sleep", "1000"]);
        node.shoal(&args).ok();
    };
    run("fine", &["--health-cmd", "echo ok", "--health-interval", "1s", "--health-timeout", "5s"]);
    run("waiting", &["--health-cmd", "false", "--health-interval", "200ms", "--health-start-period", "1h"]);
    run("broken", &["--health-cmd", "exit 1", "--health-interval", "200ms", "--health-retries", "1"]);
    run("unchecked", &["--no-healthcheck"]);

    let status = |name: &str, suffix: &'static str| {
        wait_until(Duration::from_secs(20), &format!("{name} to show {suffix}"), || {
            let status = status_of(&node, name);
            (status.starts_with("Up ") && status.ends_with(suffix)).then_some(status)
        })
    };
    status("fine", " (healthy)");
    status("broken", " (unhealthy)");
    // Its failures fall in the start period: starting for good.
    let waiting = status("waiting", " (health: starting)");
    assert!(!waiting.contains("(healthy)"), "{waiting}");
    let unchecked = status_of(&node, "unchecked");
    assert!(unchecked.starts_with("Up ") && !unchecked.contains('('), "{unchecked}");

    let inspect: Vec<serde_json::Value> = node.shoal(&["container", "inspect", "fine", "broken", "unchecked"]).ok().stdout_json();
    let fine = &inspect[0]["state"]["health"];
    assert_eq!((fine["status"].as_str(), fine["failing_streak"].as_u64()), (Some("healthy"), Some(0)), "{fine}");
    let last = fine["log"].as_array().and_then(|log| log.last()).cloned().unwrap_or_default();
    assert_eq!((last["exit_code"].as_i64(), last["output"].as_str()), (Some(0), Some("ok\n")), "{fine}");
    assert_eq!(inspect[0]["config"]["healthcheck"]["test"], serde_json::json!(["CMD-SHELL", "echo ok"]));
    let broken = &inspect[1]["state"]["health"];
    assert_eq!(broken["status"], "unhealthy", "{broken}");
    assert!(broken["failing_streak"].as_u64() >= Some(1), "{broken}");
    assert!(inspect[2]["state"].get("health").is_none(), "{}", inspect[2]);

    for name in ["fine", "waiting", "broken", "unchecked"] {
        node.shoal(&["container", "rm", "-f", name]).ok();
    }
    node.assert_clean();
}
