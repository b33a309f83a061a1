//! `shoal compose` on one standalone node (a daemon in no swarm), with the
//! very file the stack test deploys to a swarm: `compose up -d` gives
//! running containers that reach each other by service name and alias, with
//! the secret, the config, the volume and the published port; a second `up`
//! changes nothing; a changed file recreates only the changed service;
//! `compose down --volumes` leaves no container, network or volume; and on a
//! swarm node `compose up` points at `stack deploy`.

use std::time::Duration;

use crate::stacks::write_stack;
use crate::support::bridge_node::{fetch, import_busybox, IMAGE};
use crate::support::{wait_until, Cluster, Output};

const HOST: &str = "manager1";
const SETTLE: Duration = Duration::from_secs(20);

struct Compose {
    cluster: Cluster,
    file: String,
}

impl Compose {
    fn run(&self, args: &[&str]) -> Output {
        let mut full = vec!["compose", "-f", &self.file, "-p", "app"];
        full.extend_from_slice(args);
        self.cluster.shoal(HOST, &full)
    }

    /// `wget -O- URL` run inside `container`.
    fn fetch_from(&self, container: &str, url: &str) -> Option<String> {
        let out = self.cluster.shoal(HOST, &["exec", container, "wget", "-q", "-O", "-", url]);
        out.success().then(|| out.stdout.trim().to_string())
    }

    fn names(&self, what: &[&str]) -> Vec<String> {
        let out = self.cluster.shoal(HOST, what).ok();
        out.stdout.lines().skip(1).filter_map(|l| l.split_whitespace().find(|w| w.starts_with("app"))).map(str::to_string).collect()
    }
}

#[test]
fn compose_runs_the_stack_file_on_one_node_and_down_leaves_nothing() {
    let cluster = Cluster::up_standalone("cmpose", 1);
    import_busybox(&cluster, HOST, IMAGE);
    let dir = tempfile::tempdir().unwrap();
    let file = write_stack(dir.path(), IMAGE, IMAGE);
    let compose = Compose { cluster, file };

    let up = compose.run(&["up", "-d"]).ok();
    let order: Vec<&str> = up.stdout.lines().filter(|l| l.contains("Started")).collect();
    assert!(order.first().is_some_and(|l| l.contains("app-db-1")), "db starts before web, which depends on it: {}", up.stdout);
    for object in ["Network app_front", "Network app_back", "Volume app_dbdata", "Container app-web-3"] {
        assert!(up.stdout.contains(object), "{object}: {}", up.stdout);
    }
    assert!(up.stderr.contains("app-web-1 publishes them"), "one node has port 18080 once: {}", up.stderr);
    assert!(up.stderr.contains("deploy.update_config is ignored by compose on one node"), "{}", up.stderr);

    let ps = compose.run(&["ps"]).ok().stdout;
    for container in ["app-db-1", "app-web-1", "app-web-2", "app-web-3"] {
        assert!(ps.lines().any(|l| l.starts_with(container) && l.contains("Up")), "{container} runs: {ps}");
    }

    // By alias and by service name, across the back network; the secret and the config are there.
    let page = wait_until(SETTLE, "web-2 reaching the db by its alias", || compose.fetch_from("app-web-2", "http://database/"));
    assert_eq!(page, "s3cret", "the secret file at /run/secrets");
    assert_eq!(compose.fetch_from("app-web-1", "http://db/conf").as_deref(), Some("max_connections=10"), "the config's content");
    // The web replicas answer to `web` among themselves, and the port on the node's address.
    let name = wait_until(SETTLE, "web by its service name", || compose.fetch_from("app-web-3", "http://web/"));
    assert!(name.len() >= 2, "a web container's hostname: {name:?}");
    let url = format!("http://{}:18080/", compose.cluster.addr(HOST));
    wait_until(SETTLE, "the published port", || fetch(&url));
    // db is not on front: a container there cannot reach it.
    let front_only = compose.cluster.shoal(HOST, &["run", "--rm", "--network", "app_front", IMAGE, "wget", "-q", "-O", "-", "http://database/"]);
    assert!(!front_only.success(), "front reached the db: {front_only:?}");

    // Unchanged: nothing made again.
    let again = compose.run(&["up", "-d"]).ok().stdout;
    assert!(!again.contains("Created") && again.contains("Container app-db-1  Running"), "{again}");

    // Only web changed: web is recreated, db stays the same container.
    let db_id = compose.cluster.shoal(HOST, &["container", "inspect", "app-db-1"]).ok().stdout_json::<serde_json::Value>()[0]["id"].clone();
    let edited = std::fs::read_to_string(&compose.file).unwrap().replace("replicas: 3", "replicas: 2");
    std::fs::write(&compose.file, edited.replace("hostname > /www/index.html", "echo v2 > /www/index.html")).unwrap();
    let changed = compose.run(&["up", "-d"]).ok().stdout;
    assert!(changed.contains("app-web-1  Recreated") && changed.contains("app-web-3  Removed"), "{changed}");
    assert!(changed.contains("Container app-db-1  Running"), "{changed}");
    let db_after = compose.cluster.shoal(HOST, &["container", "inspect", "app-db-1"]).ok().stdout_json::<serde_json::Value>()[0]["id"].clone();
    assert_eq!(db_after, db_id, "db was not recreated");
    wait_until(SETTLE, "the new web", || (compose.fetch_from("app-web-1", "http://web/")? == "v2").then_some(()));

    // stop / start / logs.
    compose.run(&["stop", "web"]).ok();
    assert!(!compose.run(&["ps"]).ok().stdout.contains("app-web-1"), "stopped containers leave ps");
    assert!(compose.run(&["ps", "-a"]).ok().stdout.contains("app-web-1"));
    compose.run(&["start"]).ok();
    wait_until(SETTLE, "web back after start", || compose.fetch_from("app-web-2", "http://database/"));
    compose.run(&["logs", "db"]).ok();

    // down --volumes: nothing of the project is left.
    let down = compose.run(&["down", "--volumes"]).ok().stdout;
    assert!(down.contains("Volume app_dbdata  Removed") && down.contains("Network app_back  Removed"), "{down}");
    assert!(compose.names(&["container", "ls", "-a"]).is_empty(), "containers left");
    assert!(compose.names(&["network", "ls"]).is_empty(), "networks left");
    assert!(compose.names(&["volume", "ls"]).is_empty(), "volumes left");

    // On a swarm node, up says what to do instead.
    let address = compose.cluster.addr(HOST).to_string();
    compose.cluster.shoal(HOST, &["swarm", "init", "--advertise-addr", &address]).ok();
    let refused = compose.run(&["up", "-d"]);
    assert!(!refused.success() && refused.stderr.trim().lines().last().is_some_and(|l| l.contains("shoal stack deploy") && l.contains("--local")), "{refused:?}");
    assert!(compose.names(&["container", "ls", "-a"]).is_empty(), "nothing made on the swarm node");
}
