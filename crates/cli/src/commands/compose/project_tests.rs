//! Every key's fate when a compose file runs on one node.

use std::collections::BTreeMap;

use super::*;

fn convert_text(text: &str) -> Result<LocalProject, String> {
    let file: ComposeFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    convert("app", &file, &BTreeMap::from([("DB_PASS".to_string(), "from-env".to_string())]))
}

fn service<'a>(project: &'a LocalProject, key: &str) -> &'a LocalService {
    project.services.iter().find(|s| s.key == key).unwrap()
}

const FILE: &str = r#"
services:
  web:
    image: busybox:1
    entrypoint: ["sh", "-c"]
    command: ["httpd -f"]
    environment: {MODE: prod}
    labels: {tier: front}
    hostname: web
    user: "1000"
    working_dir: /srv
    read_only: true
    stop_signal: SIGINT
    stop_grace_period: 1500ms
    tmpfs: [/tmp]
    init: true
    tty: true
    stdin_open: true
    extra_hosts: ["gw:198.18.0.1"]
    dns: [198.18.0.53]
    cap_add: [NET_ADMIN]
    sysctls: {net.core.somaxconn: "1024"}
    ulimits: {nofile: {soft: 1024, hard: 2048}}
    healthcheck: {test: ["CMD", "true"], interval: 2s, retries: 3}
    ports: ["127.0.0.1:8080:80", "9000:9000/udp", "7000"]
    networks:
      front: {aliases: [www]}
    volumes: ["data:/data", "./conf:/conf:ro", {type: tmpfs, target: /cache, tmpfs: {size: 1000}}]
    secrets: [db_pass, {source: token, target: /etc/token, mode: 0400, uid: "5"}]
    configs: [site]
    depends_on: {db: {condition: service_healthy}}
    deploy:
      replicas: 2
      resources: {limits: {memory: 64M, cpus: "0.5", pids: 50}, reservations: {memory: 32M}}
      placement: {constraints: [node.role==manager]}
      update_config: {parallelism: 1}
    restart: always
  db:
    image: busybox:1
networks:
  front: {}
volumes:
  data: {}
secrets:
  db_pass: {environment: DB_PASS}
  token: {file: /etc/hostname}
configs:
  site: {content: "hello"}
"#;

#[test]
fn every_honoured_key_reaches_the_container() {
    let project = convert_text(FILE).unwrap();
    let web = service(&project, "web");
    assert_eq!(web.replicas, 2);
    let first = web.container("app", 1);
    assert_eq!(first.name, "app-web-1");
    assert_eq!(first.image, "busybox:1");
    assert_eq!((first.entrypoint.as_deref(), first.command.clone()), (Some("sh"), vec!["-c".to_string(), "httpd -f".to_string()]));
    assert_eq!(first.env, vec!["MODE=prod"]);
    assert_eq!(first.labels["tier"], "front");
    assert_eq!(first.labels[PROJECT_LABEL], "app");
    assert_eq!(first.labels[SERVICE_LABEL], "web");
    assert_eq!(first.labels[NUMBER_LABEL], "1");
    assert_eq!((first.hostname.as_str(), first.user.as_str(), first.workdir.as_str()), ("web", "1000", "/srv"));
    assert!(first.read_only && first.tty && first.open_stdin);
    assert_eq!((first.stop_signal.as_str(), first.stop_timeout_secs), ("SIGINT", Some(2)));
    assert_eq!((first.memory_bytes, first.nano_cpus, first.pids_limit), (64 << 20, 500_000_000, 50));
    let options = first.options.as_ref().unwrap();
    assert!(options.init);
    assert_eq!(options.cap_add, vec!["NET_ADMIN"]);
    assert_eq!(options.sysctls["net.core.somaxconn"], "1024");
    assert_eq!((options.ulimits[0].soft, options.ulimits[0].hard), (1024, 2048));
    assert_eq!((options.extra_hosts[0].name.as_str(), options.extra_hosts[0].address.as_str()), ("gw", "198.18.0.1"));
    assert_eq!(first.dns.as_ref().unwrap().nameservers, vec!["198.18.0.53"]);
    assert_eq!(first.healthcheck.as_ref().unwrap().interval_ms, 2000);
    // Networks: the service's name and the file's alias; a bridge.
    assert_eq!(first.networks[0].target, "app_front");
    assert_eq!(first.networks[0].aliases, vec!["web", "www"]);
    assert_eq!(project.networks[0].driver, pb::NetworkDriver::Bridge as i32);
    assert_eq!(project.networks[0].labels[NETWORK_LABEL], "front");
    // Ports with their host address and protocol, on the first replica only.
    let ports: Vec<(String, u32, u32, i32)> =
        first.published.iter().map(|p| (p.host_ip.clone(), p.host_port, p.container_port, p.protocol)).collect();
    assert_eq!(
        ports,
        vec![("127.0.0.1".into(), 8080, 80, pb::PortProtocol::Tcp as i32), (String::new(), 9000, 9000, pb::PortProtocol::Udp as i32)]
    );
    assert!(web.container("app", 2).published.is_empty());
    // Volumes: named (project-scoped), bind, tmpfs; the file secret bound read-only.
    let mounts: Vec<(&str, &str, &str, bool)> =
        first.mounts.iter().map(|m| (m.r#type.as_str(), m.source.as_str(), m.target.as_str(), m.readonly)).collect();
    assert!(mounts.contains(&("volume", "app_data", "/data", false)), "{mounts:?}");
    assert!(mounts.iter().any(|m| m.0 == "bind" && m.1.ends_with("/conf") && m.2 == "/conf" && m.3), "{mounts:?}");
    assert!(mounts.iter().any(|m| m.0 == "tmpfs" && m.2 == "/cache"), "{mounts:?}");
    assert!(mounts.iter().any(|m| m.0 == "tmpfs" && m.2 == "/tmp"), "{mounts:?}");
    assert!(mounts.contains(&("bind", "/etc/hostname", "/etc/token", true)), "{mounts:?}");
    // Content and environment sources are copied in.
    let files: Vec<(&str, &[u8], u32)> = web.files.iter().map(|f| (f.path.as_str(), f.data.as_slice(), f.mode)).collect();
    assert_eq!(files, vec![("/run/secrets/db_pass", b"from-env".as_slice(), 0o444), ("/site", b"hello".as_slice(), 0o444)]);
    assert_eq!(web.depends_on, vec![("db".to_string(), Condition::ServiceHealthy)]);
    assert_eq!(project.volumes[0].name, "app_data");
    assert_eq!(project.volumes[0].labels[VOLUME_LABEL], "data");
}

#[test]
fn keys_a_swarm_needs_are_warned_about_not_dropped() {
    let project = convert_text(FILE).unwrap();
    for key in [
        "services.web.deploy.placement",
        "services.web.deploy.update_config",
        "services.web.deploy.resources.reservations",
        "services.web.restart",
        "services.web.ports: 7000 has no published port",
        "services.web.secrets.token: uid, gid and mode are ignored",
        "container app-web-1 publishes them",
    ] {
        assert!(project.warnings.iter().any(|w| w.contains(key)), "{key}: {:?}", project.warnings);
    }
}

#[test]
fn dependencies_come_first_and_a_cycle_is_refused() {
    let project = convert_text(FILE).unwrap();
    let order: Vec<&str> = project.services.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(order, vec!["db", "web"]);
    let cycle = convert_text("services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [a]}\n").unwrap_err();
    assert!(cycle.contains("a, b depend on each other in a cycle"), "{cycle}");
}

#[test]
fn services_without_networks_share_the_default_bridge() {
    let project = convert_text("services:\n  a: {image: x}\n  b: {image: x}\n").unwrap();
    assert_eq!(project.networks.len(), 1);
    assert_eq!(project.networks[0].name, "app_default");
    for s in &project.services {
        let request = s.container("app", 1);
        assert_eq!(request.networks[0].target, "app_default");
        assert_eq!(request.networks[0].aliases, vec![s.key.clone()]);
    }
}

#[test]
fn what_one_node_cannot_do_is_one_sentence() {
    let overlay = convert_text("services:\n  a: {image: x, networks: [n]}\nnetworks:\n  n: {driver: overlay}\n").unwrap_err();
    assert!(overlay.contains("networks.n.driver \"overlay\" needs a swarm"), "{overlay}");
    let external = convert_text("services:\n  a: {image: x, secrets: [s]}\nsecrets:\n  s: {external: true}\n").unwrap_err();
    assert!(external.contains("services.a.secrets.s is external"), "{external}");
    let file: ComposeFile = serde_yaml_ng::from_str("services:\n  a: {image: x}\n").unwrap();
    let bad = convert("My App", &file, &BTreeMap::new()).unwrap_err();
    assert!(bad.contains("project name \"My App\" is invalid"), "{bad}");
}

#[test]
fn a_directory_names_the_project_as_docker_does() {
    assert_eq!(project_name_from_dir(std::path::Path::new("/home/me/Todo.App")), "todoapp");
    assert_eq!(project_name_from_dir(std::path::Path::new("/srv/_web-1")), "web-1");
    assert!(check_project_name("todo_app-2").is_ok());
    assert!(check_project_name("-x").is_err());
}
