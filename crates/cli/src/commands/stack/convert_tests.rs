//! The conversion against a stack like the issue's: web (3 replicas,
//! published port, health check, update_config) and db (alias, secret from
//! a file, config, named volume) on two networks.

use std::collections::{BTreeMap, HashMap};

use shoal_proto::pb;

use super::convert::*;
use crate::compose;

const STACK: &str = r#"
services:
  web:
    image: registry.test/web:1
    deploy:
      replicas: 3
      update_config: {parallelism: 1, order: start-first}
    ports: ["8080:80"]
    healthcheck: {test: ["CMD", "wget", "-q", "-O-", "localhost"], interval: 2s}
    networks: [front, back]
    depends_on:
      db: {condition: service_healthy}
  db:
    image: registry.test/db:1
    environment: {PASSWORD_FILE: /run/secrets/db_password}
    networks:
      back: {aliases: [database]}
    secrets: [db_password]
    configs: [{source: db_conf, target: /etc/db.conf}]
    volumes: ["dbdata:/var/lib/db"]
  worker:
    image: registry.test/worker:1
    deploy: {mode: global}
    extra_hosts: ["gateway:198.18.0.1"]
networks:
  front: {}
  back: {driver: overlay, labels: {tier: back}}
volumes:
  dbdata:
secrets:
  db_password: {file: ./db_password.txt}
  from_env: {environment: DB_TOKEN}
  outside: {external: true}
configs:
  db_conf: {content: "max_connections=10"}
"#;

fn objects() -> StackObjects {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db_password.txt"), "s3cret").unwrap();
    let path = dir.path().join("stack.yml");
    std::fs::write(&path, STACK).unwrap();
    let project = compose::load(&compose::LoadOptions { files: vec![path], env_file: None, environment: HashMap::new() }).unwrap();
    let environment: BTreeMap<String, String> = [("DB_TOKEN".to_string(), "tok".to_string())].into();
    convert("app", &project.file, &environment, &|p| std::fs::read(p).map_err(|e| e.to_string())).unwrap()
}

fn service<'a>(objects: &'a StackObjects, name: &str) -> &'a pb::ServiceSpec {
    objects.services.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn objects_are_named_and_labelled_as_docker_stack_deploy_does() {
    let objects = objects();
    let mut networks: Vec<&str> = objects.networks.iter().map(|n| n.name.as_str()).collect();
    networks.sort();
    assert_eq!(networks, ["app_back", "app_default", "app_front"], "worker names no network, so the stack's default exists");
    assert!(objects.networks.iter().all(|n| n.labels.get(NAMESPACE_LABEL).map(String::as_str) == Some("app")));
    assert_eq!(objects.networks.iter().find(|n| n.name == "app_back").unwrap().labels["tier"], "back");
    let mut services: Vec<&str> = objects.services.iter().map(|s| s.name.as_str()).collect();
    services.sort();
    assert_eq!(services, ["app_db", "app_web", "app_worker"]);
    assert!(objects.services.iter().all(|s| s.labels[NAMESPACE_LABEL] == "app"));

    let secrets: Vec<(&str, Option<&[u8]>)> = objects.secrets.iter().map(|s| (s.name.as_str(), s.data.as_deref())).collect();
    assert!(secrets.contains(&("app_db_password", Some(&b"s3cret"[..]))), "{secrets:?}");
    assert!(secrets.contains(&("app_from_env", Some(&b"tok"[..]))), "{secrets:?}");
    assert!(secrets.contains(&("outside", None)), "external secrets keep their name and are not created: {secrets:?}");
    assert_eq!(objects.configs[0].name, "app_db_conf");
    assert_eq!(objects.configs[0].data.as_deref(), Some(&b"max_connections=10"[..]));
}

#[test]
fn services_carry_every_key_into_their_spec() {
    let objects = objects();
    let web = service(&objects, "app_web");
    assert_eq!((web.mode.as_str(), web.replicas), ("replicated", 3));
    let task = web.task.as_ref().unwrap();
    assert_eq!(task.healthcheck.as_ref().unwrap().interval_ms, 2000);
    let names: Vec<&str> = task.networks.iter().map(|n| n.target.as_str()).collect();
    assert_eq!(names, ["app_back", "app_front"]);
    assert!(task.networks.iter().all(|n| n.aliases == ["web"]), "the short name resolves on each network");
    let port = &web.endpoint.as_ref().unwrap().ports[0];
    assert_eq!((port.published_port, port.target_port), (8080, 80));
    assert_eq!(web.update_config.as_ref().unwrap().order, pb::UpdateOrder::StartFirst as i32);
    assert_eq!(web.depends_on, [pb::ServiceDependency { service: "app_db".into(), condition: pb::DependencyCondition::Healthy.into() }]);

    let db = service(&objects, "app_db");
    let task = db.task.as_ref().unwrap();
    assert_eq!(task.networks[0].aliases, ["db", "database"]);
    assert_eq!(task.secrets[0].name, "app_db_password");
    assert_eq!(task.secrets[0].target, "db_password");
    assert_eq!((task.configs[0].name.as_str(), task.configs[0].target.as_str()), ("app_db_conf", "/etc/db.conf"));
    assert_eq!((task.mounts[0].r#type.as_str(), task.mounts[0].source.as_str()), ("volume", "app_dbdata"));
    assert_eq!(task.env, ["PASSWORD_FILE=/run/secrets/db_password"]);

    let worker = service(&objects, "app_worker");
    assert_eq!(worker.mode, "global");
    let task = worker.task.as_ref().unwrap();
    assert_eq!(task.networks[0].target, "app_default");
    assert_eq!(task.options.as_ref().unwrap().extra_hosts[0], pb::HostEntry { name: "gateway".into(), address: "198.18.0.1".into() });
}
