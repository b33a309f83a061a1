//! Contexts on a real 3-manager cluster, from the root namespace as a
//! remote user would: a context made from a client bundle drives the
//! swarm over mTLS, keeps working when the manager it names is down (it
//! tries the bundle's other managers), and survives export and import.
//! Every command runs with its own SHOAL_CONFIG, as a user's ~/.shoal.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{run, wait_until, Cluster, Output, CLI_TIMEOUT, SHOAL};
use crate::swarm_helpers::wait_all_ready;

/// `shoal ARGS` with `config` as its config directory.
fn shoal(config: &Path, args: &[&str]) -> Output {
    let setting = format!("SHOAL_CONFIG={}", config.display());
    let mut full = vec!["-u", "SHOAL_HOST", "-u", "SHOAL_CONTEXT", "-u", "SHOAL_CERT_PATH", setting.as_str(), SHOAL];
    full.extend_from_slice(args);
    run("env", &full, CLI_TIMEOUT)
}

#[test]
fn a_context_from_a_bundle_drives_the_swarm_and_fails_over_to_another_manager() {
    let cluster = Cluster::up("ctx", 3, 0);
    wait_all_ready(&cluster, "manager1", 3);
    let work = tempfile::tempdir().expect("a temporary directory");
    let bundle = work.path().join("bundle");
    let config = work.path().join("config");
    let bundle_arg = bundle.display().to_string();
    cluster.shoal("manager1", &["swarm", "client-bundle", "--out", &bundle_arg]).ok();
    let managers = std::fs::read_to_string(bundle.join("managers")).expect("the bundle lists the managers");
    assert_eq!(managers.lines().count(), 3, "{managers}");

    // The context names the leader; the bundle lists the others to try.
    let leader = crate::swarm_helpers::leader(&cluster, &["manager1", "manager2", "manager3"]);
    let host = format!("tcp://{}:4242", cluster.addr(&leader));
    shoal(&config, &["context", "create", "lab", "--from-bundle", &bundle_arg, "--host", &host, "--description", "test swarm"]).ok();
    let key = config.join("contexts/lab/tls/key.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).expect("the key").permissions().mode() & 0o777, 0o600);
    // Not in use yet: the default context is the local socket, absent here.
    let local = shoal(&config, &["node", "ls"]);
    assert!(!local.success() && local.stderr.contains("unix:///run/shoal/shoal.sock"), "{local:?}");
    // --context for one command, `context use` for all that follow.
    assert_eq!(shoal(&config, &["--context", "lab", "node", "ls", "-q"]).ok().lines().len(), 3);
    shoal(&config, &["context", "use", "lab"]).ok();
    assert_eq!(shoal(&config, &["context", "show"]).ok().stdout.trim(), "lab");
    let ls = shoal(&config, &["context", "ls"]).ok().stdout;
    assert!(ls.contains("lab *") && ls.contains("test swarm"), "{ls}");
    shoal(&config, &["service", "create", "--detach", "--name", "probe", "busybox:1", "true"]).ok();

    // The leader, the manager the context names, goes down: the next one
    // answers, once the others have elected a leader.
    let down = leader.as_str();
    cluster.stop(down, true);
    let started = Instant::now();
    let written = wait_until(Duration::from_secs(10), "a write through the context", || {
        shoal(&config, &["service", "update", "--detach", "--replicas", "0", "probe"]).success().then(Instant::now)
    });
    let took = written - started;
    println!("write through the context with {down} down: {took:?}");
    assert!(took < Duration::from_secs(2), "the context failed over in {took:?}");
    cluster.start(down);

    // Export and import under another name; rm; bad input.
    let archive = work.path().join("lab.tar");
    let archive_arg = archive.display().to_string();
    shoal(&config, &["context", "export", "lab", &archive_arg]).ok();
    shoal(&config, &["context", "import", "copy", &archive_arg]).ok();
    assert_eq!(shoal(&config, &["--context", "copy", "node", "ls", "-q"]).ok().lines().len(), 3);
    shoal(&config, &["context", "rm", "copy"]).ok();
    for (args, names) in [
        (vec!["context", "create", "lab", "--from-bundle", bundle_arg.as_str()], "context \"lab\" already exists"),
        (vec!["context", "create", "web", "--host", "http://198.18.0.1:4242", "--from-bundle", bundle_arg.as_str()], "host \"http://198.18.0.1:4242\" is invalid"),
        (vec!["context", "use", "nope"], "context \"nope\" does not exist"),
        (vec!["context", "create", "bare", "--host", "tcp://198.18.0.1:4242"], "needs a client certificate"),
        (vec!["--context", "nope", "node", "ls"], "context \"nope\" does not exist"),
    ] {
        let out = shoal(&config, &args);
        assert!(!out.success() && out.stderr.contains(names) && out.stderr.trim().lines().count() == 1, "{out:?}");
    }
    std::fs::remove_file(bundle.join("key.pem")).expect("removing the bundle's key");
    let out = shoal(&config, &["context", "create", "nokey", "--from-bundle", &bundle_arg]);
    assert!(!out.success() && out.stderr.contains("key.pem"), "{out:?}");
    // A wrong certificate: the CA of another swarm is refused with the reason.
    let wrong = work.path().join("wrong.pem");
    std::fs::write(&wrong, "not a certificate").expect("writing a bad file");
    let out = shoal(&config, &["--tlscacert", &wrong.display().to_string(), "node", "ls"]);
    assert!(!out.success() && out.stderr.trim().lines().count() == 1, "{out:?}");
    // -H still wins over the context in use.
    let out = shoal(&config, &["-H", "unix:///nonexistent.sock", "node", "ls"]);
    assert!(!out.success() && out.stderr.contains("unix:///nonexistent.sock"), "{out:?}");
}
