//! Images to and from a registry through the real CLI and daemon: `image
//! push` of a pulled and of a committed image, pulled by digest on another
//! node; `login` / `logout` keeping credentials as docker does, which pull
//! and push then use.

use std::os::unix::fs::PermissionsExt;

use shoal_runtime::testing::{TestImages, TestRegistry, TEST_PASSWORD, TEST_USER};

use std::time::Duration;

use crate::support::node::{registry_with_busybox, LocalNode};
use crate::support::swarm::TaskRow;
use crate::support::swarm_helpers::wait_all_ready;
use crate::support::{wait_until, Cluster};

/// `TAG: digest: sha256:... size: N`, the last line of a push.
fn pushed_digest(stdout: &str) -> String {
    let last = stdout.lines().last().unwrap_or_default();
    let digest = last.split("digest: ").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap_or_default();
    assert!(digest.starts_with("sha256:"), "a push ends with the digest: {stdout}");
    digest.to_string()
}

#[test]
fn push_then_pull_by_digest_on_another_node_gives_the_same_image() {
    let (registry, busybox) = registry_with_busybox();
    let first = LocalNode::start("push1");
    let second = LocalNode::start("push2");
    // A layer made on this node (a commit) over the pulled ones.
    first.shoal(&["run", "--name", "maker", &busybox.reference, "sh", "-c", "echo pushed-file > /made.txt"]).ok();
    let target = format!("{}/team/made:v1", registry.host());
    first.shoal(&["commit", "maker", &target]).ok();

    let push = first.shoal(&["image", "push", &target]).ok();
    let digest = pushed_digest(&push.stdout);
    let layers: Vec<&str> = push.stdout.lines().filter(|l| l.ends_with(": Pushed")).collect();
    assert_eq!(layers.len(), 2, "the base layer and the commit's: {}", push.stdout);
    assert!(push.stdout.lines().last().unwrap_or_default().starts_with("v1: digest: "), "{}", push.stdout);

    // Another node's data root pulls exactly that image by its digest.
    let by_digest = format!("{}/team/made@{digest}", registry.host());
    let pull = second.shoal(&["image", "pull", &by_digest]).ok();
    assert!(pull.stderr.contains(&digest) || pull.stdout.contains(&digest), "{pull:?}");
    assert_eq!(second.shoal(&["run", "--rm", &by_digest, "cat", "/made.txt"]).ok().stdout, "pushed-file\n");
    let on_second: serde_json::Value = second.shoal(&["image", "inspect", &by_digest]).ok().stdout_json::<Vec<serde_json::Value>>().remove(0);
    let on_first: serde_json::Value = first.shoal(&["image", "inspect", &target]).ok().stdout_json::<Vec<serde_json::Value>>().remove(0);
    assert_eq!(on_second["id"], on_first["id"], "the same image on both nodes");
    assert!(on_first["repo_digests"].to_string().contains(&digest), "the pushed image answers to its digest: {on_first}");

    // Pushed again, nothing is sent, and the digest is the same.
    let again = first.shoal(&["image", "push", &target]).ok();
    assert_eq!(pushed_digest(&again.stdout), digest);
    assert_eq!(again.stdout.matches("Layer already exists").count(), 2, "{}", again.stdout);

    let untagged = first.shoal(&["image", "push", &format!("{}/team/never-tagged:1", registry.host())]);
    assert!(!untagged.success() && untagged.stderr.contains("tag one first"), "{}", untagged.stderr);
    first.shoal(&["container", "rm", "maker"]).ok();
}

#[test]
fn login_keeps_credentials_that_pull_and_push_use_and_logout_forgets_them() {
    let registry = TestRegistry::start_with_auth().expect("a registry that needs a login");
    let images = TestImages::shared().expect("the test images");
    registry.push(&images.layout, TestImages::BUSYBOX, "private", "1").expect("pushing busybox");
    let config = tempfile::tempdir().expect("a docker config directory");
    // Every shoal this test starts keeps its logins here.
    std::env::set_var("DOCKER_CONFIG", config.path());
    let node = LocalNode::start("login");
    let private = format!("{}/private:1", registry.host());
    let host = registry.host();

    let anonymous = node.shoal(&["image", "pull", &private]);
    assert!(!anonymous.success() && anonymous.stderr.contains("refused access") && anonymous.stderr.contains("credentials"), "{}", anonymous.stderr);
    let wrong = node.shoal_with_input(&["login", "-u", TEST_USER, "--password-stdin", &host], b"wrong\n");
    assert!(!wrong.success() && wrong.stderr.contains("refused the login"), "{}", wrong.stderr);
    assert_eq!(wrong.stderr.trim().lines().count(), 1, "{}", wrong.stderr);
    assert!(!config.path().join("config.json").exists(), "a refused login keeps nothing");

    let login = node.shoal_with_input(&["login", "--username", TEST_USER, "--password-stdin", &host], format!("{TEST_PASSWORD}\n").as_bytes()).ok();
    assert_eq!(login.stdout, "Login Succeeded\n");
    let file = config.path().join("config.json");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let kept: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(kept["auths"][&host]["auth"].is_string(), "docker's layout: {kept}");

    node.shoal(&["image", "pull", &private]).ok();
    let copy = format!("{host}/private:copy");
    node.shoal(&["image", "tag", &private, &copy]).ok();
    let push = node.shoal(&["image", "push", &copy]).ok();
    pushed_digest(&push.stdout);

    let logout = node.shoal(&["logout", &host]).ok();
    assert_eq!(logout.stdout, format!("Removing login credentials for {host}\n"));
    let refused = node.shoal(&["image", "push", &copy]);
    assert!(!refused.success() && refused.stderr.contains("refused access"), "{}", refused.stderr);
    assert_eq!(node.shoal(&["logout", &host]).ok().stdout, format!("Not logged in to {host}\n"));
}

#[test]
fn with_registry_auth_lets_the_swarm_pull_a_private_image_and_inspect_never_shows_it() {
    let cluster = Cluster::up("wrauth", 1, 1);
    let bridge = std::net::Ipv4Addr::new(198, 18, cluster.subnet_index(), 254);
    let port = std::net::TcpListener::bind((bridge, 0)).and_then(|l| l.local_addr()).expect("a free port on the bridge").port();
    let registry = TestRegistry::start_with_auth_at(std::net::SocketAddr::from((bridge, port))).expect("a registry that needs a login");
    let images = TestImages::shared().expect("the test images");
    let private = registry.push(&images.layout, TestImages::BUSYBOX, "private", "1").expect("pushing busybox").reference;
    wait_all_ready(&cluster, "manager1", 2);
    let config = tempfile::tempdir().expect("a docker config directory");
    std::env::set_var("DOCKER_CONFIG", config.path());
    cluster
        .shoal_with_input("manager1", &["login", "-u", TEST_USER, "--password-stdin", &registry.host()], format!("{TEST_PASSWORD}\n").as_bytes())
        .ok();
    let on_worker = ["--constraint", "node.role==worker", "--detach"];
    let ps = |service: &str| -> Vec<TaskRow> { cluster.shoal("manager1", &["service", "ps", service, "--format", "json"]).ok().stdout_json() };

    // Without the flag the worker has no login: its task is rejected, saying why.
    let mut args = vec!["service", "create", "--name", "nologin"];
    args.extend_from_slice(&on_worker);
    args.extend_from_slice(&[&private, "sleep", "3600"]);
    cluster.shoal("manager1", &args).ok();
    let refused = wait_until(Duration::from_secs(30), "the task without a login to be rejected", || {
        ps("nologin").into_iter().find(|t| t.current_state.starts_with("rejected"))
    });
    assert!(refused.error.contains("refused access"), "{refused:?}");

    let mut args = vec!["service", "create", "--with-registry-auth", "--name", "withlogin"];
    args.extend_from_slice(&on_worker);
    args.extend_from_slice(&[&private, "sleep", "3600"]);
    cluster.shoal("manager1", &args).ok();
    let running = wait_until(Duration::from_secs(30), "the task with the login to run", || {
        ps("withlogin").into_iter().find(|t| t.current_state.starts_with("running"))
    });
    assert!(running.node.starts_with("worker"), "{running:?}");
    let inspect = cluster.shoal("manager1", &["service", "inspect", "withlogin"]).ok().stdout;
    assert!(!inspect.contains(TEST_PASSWORD), "inspect shows no password: {inspect}");
    assert!(inspect.contains("@sha256:"), "the manager pinned the private image with the login: {inspect}");

    // An update without the flag keeps the login: the new tasks pull too.
    cluster.shoal("manager1", &["service", "update", "--detach", "--env-add", "AGAIN=1", "withlogin"]).ok();
    wait_until(Duration::from_secs(30), "the updated task to run", || {
        let tasks = ps("withlogin");
        tasks.iter().any(|t| t.current_state.starts_with("running") && t.id != running.id).then_some(())
    });
    cluster.down();
}
