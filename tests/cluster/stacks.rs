//! `stack deploy` through the real CLI and a 3+2 cluster: a web service (3
//! replicas, published port, health check, update_config) and a db service
//! (alias, secret from a file, config, named volume) on two networks. The
//! web tasks reach the db by its alias, the port answers on every node, the
//! secret is at /run/secrets; a redeploy with only web's image changed
//! rolls web and leaves db's tasks alone; an unchanged redeploy changes
//! nothing; `stack rm` removes everything but the volume.

use std::path::Path;

use crate::routing_mesh::{curl, netns_of};
use crate::support::swarm::{Swarm, CONVERGE, HOSTS};
use crate::support::wait_until;

/// The stack file (also what the one-node compose test runs).
pub fn write_stack(dir: &Path, web_image: &str, db_image: &str) -> String {
    std::fs::write(dir.join("db_password.txt"), "s3cret").unwrap();
    std::fs::write(dir.join(".env"), format!("WEB_IMAGE={web_image}\n")).unwrap();
    let file = dir.join("stack.yml");
    std::fs::write(
        &file,
        format!(
            r#"
services:
  web:
    image: ${{WEB_IMAGE}}
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
    deploy:
      replicas: 3
      update_config: {{parallelism: 1, order: start-first}}
    ports: ["18080:80"]
    healthcheck: {{test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1/"], interval: 1s, retries: 5}}
    networks: [front, back]
    depends_on: [db]
    stop_grace_period: 1s
  db:
    image: {db_image}
    command: ["sh", "-c", "mkdir -p /www && cat /run/secrets/db_password > /www/index.html && cat /etc/db.conf > /www/conf && touch /var/lib/db/used && exec httpd -f -p 80 -h /www"]
    networks:
      back: {{aliases: [database]}}
    secrets: [db_password]
    configs: [{{source: db_conf, target: /etc/db.conf}}]
    volumes: ["dbdata:/var/lib/db"]
    stop_grace_period: 1s
networks:
  front: {{}}
  back: {{}}
volumes:
  dbdata:
secrets:
  db_password: {{file: ./db_password.txt}}
configs:
  db_conf: {{content: "max_connections=10"}}
"#
        ),
    )
    .unwrap();
    file.display().to_string()
}

#[test]
fn a_stack_deploys_redeploys_only_what_changed_and_is_removed() {
    let swarm = Swarm::up("stack");
    let web_v2 = swarm.push_busybox_as("2");
    let dir = tempfile::tempdir().unwrap();
    let file = write_stack(dir.path(), &swarm.image, &swarm.image);
    let deployed = swarm.shoal(&["stack", "deploy", "-c", &file, "--detach=false", "app"]).ok().stdout;
    for object in ["service app_web", "service app_db", "network app_front", "network app_back", "secret app_db_password", "config app_db_conf"] {
        assert!(deployed.contains(&format!("Creating {object}")), "{object}: {deployed}");
    }
    let web = swarm.wait_running("app_web", 3);
    let db = swarm.wait_running("app_db", 1);

    // ls, services, ps.
    let ls = swarm.shoal(&["stack", "ls"]).ok().stdout;
    assert!(ls.lines().any(|l| l.split_whitespace().take(3).collect::<Vec<_>>() == ["app", "2", "1"]), "{ls}");
    let services = swarm.shoal(&["stack", "services", "app"]).ok().stdout;
    assert!(services.contains("app_web") && services.contains("3/3") && services.contains("app_db"), "{services}");
    let ps = swarm.shoal(&["stack", "ps", "app"]).ok().stdout;
    assert!(ps.contains("app_web.1") && ps.contains("app_db.1"), "{ps}");

    // web reaches db by its alias, and db has its secret and config.
    let netns = netns_of(&swarm, &web[0]);
    let page = wait_until(CONVERGE, "db by its alias", || curl(Some(&netns), "http://database/", "2"));
    assert_eq!(page, "s3cret", "the secret at /run/secrets");
    assert_eq!(curl(Some(&netns), "http://db/conf", "2").as_deref(), Some("max_connections=10"), "the short name and the config");
    // The published port answers on every node.
    for host in HOSTS {
        let url = format!("http://{}:18080/", swarm.cluster.addr(host));
        wait_until(CONVERGE, &format!("port 18080 on {host}"), || curl(None, &url, "2"));
    }

    // Unchanged file: nothing written.
    let again = swarm.shoal(&["stack", "deploy", "-c", &file, "app"]).ok().stdout;
    assert!(again.contains("is up to date (revision 1)"), "{again}");

    // Only web's image changed: web rolls, db's task stays the same.
    write_stack(dir.path(), &web_v2, &swarm.image);
    let redeployed = swarm.shoal(&["stack", "deploy", "-c", &file, "--detach=false", "app"]).ok().stdout;
    assert!(redeployed.contains("Updating service app_web") && !redeployed.contains("app_db"), "{redeployed}");
    wait_until(CONVERGE, "web on the new image", || {
        let running = swarm.running("app_web");
        (running.len() == 3 && running.iter().all(|t| t.image.contains(":2"))).then_some(())
    });
    let db_after = swarm.running("app_db");
    assert_eq!(db_after.iter().map(|t| &t.id).collect::<Vec<_>>(), db.iter().map(|t| &t.id).collect::<Vec<_>>(), "db's task was not replaced");
    let ls = swarm.shoal(&["stack", "ls"]).ok().stdout;
    assert!(ls.lines().any(|l| l.split_whitespace().take(3).collect::<Vec<_>>() == ["app", "2", "2"]), "revision 2: {ls}");

    // A changed secret: a new version the db rolls onto (Swarm refuses this).
    std::fs::write(dir.path().join("db_password.txt"), "rotated").unwrap();
    let rotated = swarm.shoal(&["stack", "deploy", "-c", &file, "--detach=false", "app"]).ok().stdout;
    assert!(rotated.contains("Creating secret app_db_password.v2") && rotated.contains("Updating service app_db"), "{rotated}");
    assert!(!rotated.contains("app_web"), "web does not use the secret: {rotated}");
    let web = swarm.running("app_web");
    let netns = netns_of(&swarm, &web[0]);
    wait_until(CONVERGE, "db serving the rotated secret", || (curl(Some(&netns), "http://database/", "2")? == "rotated").then_some(()));

    // rm: services, networks, secret, config go; the volume stays.
    let removed = swarm.shoal(&["stack", "rm", "app"]).ok().stdout;
    for object in ["service app_web", "service app_db", "secret app_db_password", "secret app_db_password.v2", "config app_db_conf", "network app_front", "network app_back"] {
        assert!(removed.contains(&format!("Removing {object}")), "{object}: {removed}");
    }
    assert!(!swarm.shoal(&["service", "ls"]).ok().stdout.contains("app_"));
    assert!(!swarm.shoal(&["network", "ls"]).ok().stdout.contains("app_"));
    assert!(!swarm.shoal(&["stack", "ls"]).ok().stdout.contains("app"));
    let volumes = swarm.cluster.shoal(&db[0].node, &["volume", "ls"]).ok().stdout;
    assert!(volumes.contains("app_dbdata"), "the volume stays: {volumes}");

    // Bad input: one sentence, nothing deployed.
    let bad = swarm.shoal(&["stack", "deploy", "-c", &file, "bad name"]);
    assert!(!bad.success() && bad.stderr.contains("stack name \"bad name\" is invalid"), "{bad:?}");
    std::fs::write(dir.path().join("broken.yml"), "services:\n  web:\n    image: x\n    ports: ['9090-9091:8080']\n").unwrap();
    let broken = dir.path().join("broken.yml").display().to_string();
    let bad = swarm.shoal(&["stack", "deploy", "-c", &broken, "app"]);
    assert!(!bad.success() && bad.stderr.contains("services.web.ports[0]") && bad.stderr.contains("broken.yml"), "{bad:?}");
    assert!(!swarm.shoal(&["stack", "ls"]).ok().stdout.contains("app"));
}
