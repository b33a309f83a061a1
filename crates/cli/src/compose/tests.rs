//! The loader against whole files: what users write, as Docker reads it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::model::*;
use super::*;

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().expect("tempdir"))
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

fn load_files(files: &[PathBuf], env: &[(&str, &str)]) -> Result<Project, String> {
    load(&LoadOptions {
        files: files.to_vec(),
        env_file: None,
        environment: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>(),
    })
}

fn load_text(text: &str) -> Result<Project, String> {
    let dir = Dir::new();
    let file = dir.write("compose.yml", text);
    load_files(&[file], &[])
}

/// The seeds' todo-app, as people write it for `docker compose` and
/// `docker stack deploy`.
const TODO_APP: &str = r#"
services:
  app:
    image: todo-app:${TAG:-latest}
    command: sh -c "yarn install && yarn run dev"
    ports:
      - 127.0.0.1:3000:3000
    working_dir: /app
    environment:
      MYSQL_HOST: mysql
      MYSQL_USER: root
      MYSQL_PASSWORD: secret
      MYSQL_DB: todos
  mysql:
    image: mysql:8.0
    volumes:
      - todo-mysql-data:/var/lib/mysql
    environment:
      - MYSQL_ROOT_PASSWORD=secret
      - MYSQL_DATABASE=todos
    networks:
      default:
        aliases: [db]
volumes:
  todo-mysql-data:
"#;

#[test]
fn the_todo_app_loads_without_a_version_key() {
    let project = load_text(TODO_APP).expect("loads");
    let app = &project.file.services["app"];
    assert_eq!(app.image.as_deref(), Some("todo-app:latest"));
    assert_eq!(app.command.as_ref().unwrap().0, ["sh", "-c", "yarn install && yarn run dev"]);
    assert_eq!(app.ports[0].0[0].published, Some(3000));
    assert_eq!(app.ports[0].0[0].host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(app.environment.0["MYSQL_HOST"].as_deref(), Some("mysql"));
    let mysql = &project.file.services["mysql"];
    assert_eq!(mysql.environment.0["MYSQL_DATABASE"].as_deref(), Some("todos"));
    assert_eq!(mysql.volumes[0].kind, VolumeKind::Volume);
    assert_eq!(mysql.networks.0["default"].aliases, ["db"]);
    assert!(project.file.volumes.contains_key("todo-mysql-data"));
    assert!(project.warnings.is_empty(), "{:?}", project.warnings);
}

#[test]
fn versions_two_and_three_are_accepted() {
    for version in ["'2.4'", "'3.8'", "3"] {
        let project = load_text(&format!("version: {version}\nservices:\n  a:\n    image: busybox\n")).expect(version);
        assert!(project.file.services.contains_key("a"));
    }
}

#[test]
fn anchors_merge_keys_and_extension_fields_work() {
    let project = load_text(
        r#"
x-common: &common
  image: busybox
  environment:
    SHARED: "yes"
  x-note: ignored too
services:
  a:
    <<: *common
    command: [a]
  b:
    <<: *common
    image: busybox:other
"#,
    )
    .expect("loads");
    assert_eq!(project.file.services["a"].image.as_deref(), Some("busybox"));
    assert_eq!(project.file.services["a"].environment.0["SHARED"].as_deref(), Some("yes"));
    assert_eq!(project.file.services["b"].image.as_deref(), Some("busybox:other"));
    assert!(project.merged.get("x-common").is_none());
}

#[test]
fn variables_come_from_the_shell_then_the_dot_env_file() {
    let dir = Dir::new();
    dir.write(".env", "TAG=from-dotenv\nPORT=8080\nREPLICAS=4\n");
    let file = dir.write(
        "compose.yml",
        "services:\n  web:\n    image: web:${TAG}\n    ports: ['$PORT:80']\n    environment: {PRICE: '$$5', EMPTY: '${UNSET_VAR}'}\n    deploy:\n      replicas: ${REPLICAS}\n",
    );
    let project = load_files(std::slice::from_ref(&file), &[("PORT", "9090")]).expect("loads");
    let web = &project.file.services["web"];
    assert_eq!(web.image.as_deref(), Some("web:from-dotenv"));
    assert_eq!(web.ports[0].0[0].published, Some(9090), "the shell wins over .env");
    assert_eq!(web.environment.0["PRICE"].as_deref(), Some("$5"));
    assert_eq!(web.deploy.replicas, Some(syntax::Count(4)));
    assert_eq!(project.warnings, ["the variable UNSET_VAR is not set; an empty string is used in its place"]);

    // --env-file names another file.
    let other = dir.write("prod.env", "TAG=prod\nPORT=1\nREPLICAS=1\n");
    let project = load(&LoadOptions { files: vec![file], env_file: Some(other), environment: HashMap::new() }).unwrap();
    assert_eq!(project.file.services["web"].image.as_deref(), Some("web:prod"));
}

#[test]
fn a_required_variable_that_is_unset_names_the_key_and_message() {
    let err = load_text("services:\n  db:\n    image: db\n    environment:\n      PW: ${DB_PASSWORD:?must be set}\n").unwrap_err();
    assert!(err.contains("services.db.environment.PW needs the variable DB_PASSWORD: must be set"), "{err}");
    assert!(err.contains("compose.yml"), "{err}");
}

#[test]
fn env_files_fold_into_the_environment_and_the_service_wins() {
    let dir = Dir::new();
    dir.write("web.env", "A=from-file\nB=from-file\n");
    let file = dir.write(
        "compose.yml",
        "services:\n  web:\n    image: web\n    env_file: [web.env, {path: missing.env, required: false}]\n    environment: [B=mine, FROM_SHELL, NOT_SET]\n",
    );
    let project = load_files(&[file], &[("FROM_SHELL", "shell")]).unwrap();
    let env = &project.file.services["web"].environment.0;
    assert_eq!(env["A"].as_deref(), Some("from-file"));
    assert_eq!(env["B"].as_deref(), Some("mine"));
    assert_eq!(env["FROM_SHELL"].as_deref(), Some("shell"));
    assert!(!env.contains_key("NOT_SET"), "a bare key the shell does not set is dropped");
}

#[test]
fn two_files_merge_in_order() {
    let dir = Dir::new();
    let base = dir.write(
        "compose.yml",
        "services:\n  web:\n    image: web:1\n    environment: [A=1]\n    volumes: ['./conf:/etc/web']\n    deploy: {replicas: 2}\n",
    );
    let over = dir.write(
        "compose.prod.yml",
        "services:\n  web:\n    image: web:2\n    environment: {B: '2'}\n    volumes: ['./prod:/etc/web:ro']\n    deploy: {replicas: 5}\n",
    );
    let project = load_files(&[base, over], &[]).unwrap();
    let web = &project.file.services["web"];
    assert_eq!(web.image.as_deref(), Some("web:2"));
    assert_eq!(web.environment.0.len(), 2);
    assert_eq!(web.volumes.len(), 1);
    assert!(web.volumes[0].read_only);
    assert_eq!(web.volumes[0].source.as_deref(), Some(dir.path().canonicalize().unwrap().join("prod").to_str().unwrap()));
    assert_eq!(web.deploy.replicas, Some(syntax::Count(5)));
}

#[test]
fn every_honoured_service_key_reaches_the_model() {
    let dir = Dir::new();
    dir.write("db_password.txt", "pw");
    let file = dir.write(
        "compose.yml",
        r#"
services:
  web:
    image: web:1
    entrypoint: ["/bin/serve"]
    command: ["--port", "80"]
    labels: {tier: front}
    hostname: web-host
    user: "1000:1000"
    working_dir: /srv
    read_only: true
    stop_grace_period: 1m30s
    stop_signal: SIGINT
    tmpfs: /run
    init: true
    tty: true
    stdin_open: true
    extra_hosts: ["gateway:198.18.0.1"]
    dns: 198.18.0.53
    dns_search: [example.test]
    dns_opt: [ndots:2]
    cap_add: [NET_ADMIN]
    cap_drop: [MKNOD]
    sysctls: {net.core.somaxconn: 1024}
    ulimits:
      nproc: 65535
      nofile: {soft: 20000, hard: 40000}
    healthcheck:
      test: ["CMD", "wget", "-q", "localhost"]
      interval: 5s
      timeout: 2s
      retries: 4
      start_period: 10s
      start_interval: 1s
    ports:
      - "8080-8081:80-81/udp"
      - {target: 443, published: 8443, protocol: tcp, mode: host}
      - 9000
    networks:
      front: {aliases: [www]}
      back:
    volumes:
      - data:/data:ro
      - {type: tmpfs, target: /cache, tmpfs: {size: 64m, mode: 0o1777}}
      - {type: bind, source: ./static, target: /static, read_only: true}
      - /anonymous
    secrets:
      - db_password
      - {source: db_password, target: pw, uid: "1000", gid: "1000", mode: 0400}
    configs: [{source: site, target: /etc/site.conf}]
    depends_on:
      db: {condition: service_healthy}
    deploy:
      mode: replicated
      replicas: 3
      labels: [owner=web-team]
      placement:
        constraints: [node.role == worker]
        preferences: [{spread: node.labels.zone}]
        max_replicas_per_node: 2
      resources:
        limits: {cpus: "0.5", memory: 512M, pids: 100}
        reservations: {cpus: 0.25, memory: 128M}
      restart_policy: {condition: on-failure, delay: 5s, max_attempts: 3, window: 2m}
      update_config: {parallelism: 2, delay: 10s, failure_action: rollback, monitor: 30s, max_failure_ratio: 0.2, order: start-first}
      rollback_config: {parallelism: 1, order: stop-first}
      endpoint_mode: vip
  db:
    image: db:1
    healthcheck: {test: "pg_isready", disable: false}
    depends_on: [cache]
  cache:
    image: cache:1
    deploy: {mode: global}
networks:
  front: {driver: overlay, attachable: true, labels: {a: b}}
  back:
    internal: true
    ipam: {config: [{subnet: 100.64.50.0/24}]}
volumes:
  data: {labels: [keep=yes]}
secrets:
  db_password: {file: ./db_password.txt}
configs:
  site: {content: "server {}"}
"#,
    );
    let project = load_files(&[file], &[]).expect("loads");
    let web = &project.file.services["web"];
    assert_eq!(web.entrypoint.as_ref().unwrap().0, ["/bin/serve"]);
    assert_eq!(web.command.as_ref().unwrap().0, ["--port", "80"]);
    assert_eq!(web.labels.0["tier"].as_deref(), Some("front"));
    assert_eq!(web.hostname.as_deref(), Some("web-host"));
    assert_eq!(web.user.as_deref(), Some("1000:1000"));
    assert_eq!(web.working_dir.as_deref(), Some("/srv"));
    assert_eq!(web.read_only, Some(syntax::Flag(true)));
    assert_eq!(web.stop_grace_period, Some(syntax::DurationMs(90_000)));
    assert_eq!(web.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(web.tmpfs.0, ["/run"]);
    assert_eq!((web.init, web.tty, web.stdin_open), (Some(syntax::Flag(true)), Some(syntax::Flag(true)), Some(syntax::Flag(true))));
    assert!(web.extra_hosts.0.contains_key("gateway:198.18.0.1"));
    assert_eq!(web.dns.0, ["198.18.0.53"]);
    assert_eq!(web.dns_search.0, ["example.test"]);
    assert_eq!(web.dns_opt.0, ["ndots:2"]);
    assert_eq!((web.cap_add.as_slice(), web.cap_drop.as_slice()), (&["NET_ADMIN".to_string()][..], &["MKNOD".to_string()][..]));
    assert_eq!(web.sysctls.0["net.core.somaxconn"].as_deref(), Some("1024"));
    assert_eq!(web.ulimits["nproc"], Ulimit { soft: 65535, hard: 65535 });
    assert_eq!(web.ulimits["nofile"], Ulimit { soft: 20000, hard: 40000 });
    let health = web.healthcheck.as_ref().unwrap();
    assert_eq!(health.test.as_ref().unwrap().0, ["CMD", "wget", "-q", "localhost"]);
    assert_eq!(
        (health.interval, health.timeout, health.retries, health.start_period, health.start_interval),
        (
            Some(syntax::DurationMs(5000)),
            Some(syntax::DurationMs(2000)),
            Some(syntax::Count(4)),
            Some(syntax::DurationMs(10_000)),
            Some(syntax::DurationMs(1000))
        )
    );
    let ports: Vec<&Port> = web.ports.iter().flat_map(|p| &p.0).collect();
    assert_eq!(ports.len(), 4);
    assert_eq!((ports[0].published, ports[0].target, ports[0].protocol), (Some(8080), 80, Protocol::Udp));
    assert_eq!((ports[1].published, ports[1].target), (Some(8081), 81));
    assert_eq!((ports[2].published, ports[2].mode), (Some(8443), PublishMode::Host));
    assert_eq!((ports[3].published, ports[3].target), (None, 9000));
    assert_eq!(web.networks.0["front"].aliases, ["www"]);
    assert!(web.networks.0.contains_key("back"));
    assert_eq!((web.volumes[0].source.as_deref(), web.volumes[0].read_only), (Some("data"), true));
    assert_eq!((web.volumes[1].kind, web.volumes[1].tmpfs_size, web.volumes[1].tmpfs_mode), (VolumeKind::Tmpfs, Some(64 << 20), Some(0o1777)));
    assert_eq!(web.volumes[2].kind, VolumeKind::Bind);
    assert!(web.volumes[2].source.as_ref().unwrap().starts_with('/'), "bind sources become absolute");
    assert_eq!((web.volumes[3].kind, web.volumes[3].source.as_deref()), (VolumeKind::Volume, None));
    assert_eq!(web.secrets[0].source, "db_password");
    assert_eq!(
        web.secrets[1],
        FileReference { source: "db_password".into(), target: Some("pw".into()), uid: Some(1000), gid: Some(1000), mode: Some(0o400) }
    );
    assert_eq!(web.configs[0].target.as_deref(), Some("/etc/site.conf"));
    assert_eq!(web.depends_on.0["db"], Condition::ServiceHealthy);
    let deploy = &web.deploy;
    assert_eq!((deploy.mode, deploy.replicas), (Some(DeployMode::Replicated), Some(syntax::Count(3))));
    assert_eq!(deploy.labels.0["owner"].as_deref(), Some("web-team"));
    assert_eq!(deploy.placement.constraints, ["node.role == worker"]);
    assert_eq!(deploy.placement.preferences[0].spread, "node.labels.zone");
    assert_eq!(deploy.placement.max_replicas_per_node, Some(syntax::Count(2)));
    assert_eq!(deploy.resources.limits.cpus, Some(syntax::NanoCpus(500_000_000)));
    assert_eq!(deploy.resources.limits.memory, Some(syntax::Bytes(512 << 20)));
    assert_eq!(deploy.resources.limits.pids, Some(syntax::Count(100)));
    assert_eq!(deploy.resources.reservations.cpus, Some(syntax::NanoCpus(250_000_000)));
    let restart = deploy.restart_policy.as_ref().unwrap();
    assert_eq!((restart.condition, restart.max_attempts), (Some(RestartCondition::OnFailure), Some(syntax::Count(3))));
    let update = deploy.update_config.as_ref().unwrap();
    assert_eq!((update.failure_action, update.order, update.max_failure_ratio), (Some(FailureAction::Rollback), Some(UpdateOrder::StartFirst), Some(0.2)));
    assert_eq!(deploy.rollback_config.as_ref().unwrap().order, Some(UpdateOrder::StopFirst));
    assert_eq!(deploy.endpoint_mode, Some(EndpointMode::Vip));

    let db = &project.file.services["db"];
    assert_eq!(db.healthcheck.as_ref().unwrap().test.as_ref().unwrap().0, ["CMD-SHELL", "pg_isready"]);
    assert_eq!(db.depends_on.0["cache"], Condition::ServiceStarted);
    assert_eq!(project.file.services["cache"].deploy.mode, Some(DeployMode::Global));
    let front = project.file.networks["front"].as_ref().unwrap();
    assert_eq!((front.driver.as_deref(), front.attachable), (Some("overlay"), Some(syntax::Flag(true))));
    let back = project.file.networks["back"].as_ref().unwrap();
    assert_eq!(back.ipam.as_ref().unwrap().config[0].subnet.as_deref(), Some("100.64.50.0/24"));
    assert_eq!(project.file.volumes["data"].as_ref().unwrap().labels.0["keep"].as_deref(), Some("yes"));
    assert!(project.file.secrets["db_password"].file.as_ref().unwrap().starts_with('/'));
    assert_eq!(project.file.configs["site"].content.as_deref(), Some("server {}"));
    assert!(project.warnings.is_empty(), "{:?}", project.warnings);
}

#[test]
fn every_ignored_key_is_warned_about_once() {
    let project = load_text(
        r#"
services:
  web:
    image: web
    build: .
    container_name: web1
    links: [db]
    network_mode: host
    privileged: true
    devices: [/dev/fuse]
    ipc: host
    pid: host
    logging: {driver: syslog}
    expose: ["80"]
    mem_limit: 1g
    deploy:
      resources:
        reservations:
          generic_resources: [{discrete_resource_spec: {kind: gpu, value: 1}}]
secrets:
  s: {file: ./s, driver: vault}
"#,
    )
    .expect("loads with warnings");
    let keys = [
        "services.web.build",
        "services.web.container_name",
        "services.web.links",
        "services.web.network_mode",
        "services.web.privileged",
        "services.web.devices",
        "services.web.ipc",
        "services.web.pid",
        "services.web.logging",
        "services.web.expose",
        "services.web.mem_limit",
        "services.web.deploy.resources.reservations.generic_resources",
        "secrets.s.driver",
    ];
    for key in keys {
        let found = project.warnings.iter().filter(|w| w.starts_with(&format!("{key} is ignored: "))).count();
        assert_eq!(found, 1, "{key} in {:?}", project.warnings);
    }
    assert_eq!(project.warnings.len(), keys.len(), "{:?}", project.warnings);
}

#[test]
fn bad_input_is_refused_with_the_file_the_key_and_what_to_do() {
    let cases: &[(&str, &[&str])] = &[
        ("services:\n  web:\n    image: [unclosed\n", &["compose.yml line ", " column "]),
        ("services:\n  web:\n    image: web\nservice:\n  typo: {}\n", &["top-level key `service` is unknown"]),
        ("services:\n  web:\n    image: web\n    ports: ['9090-9091:8080']\n", &["services.web.ports[0]", "9090-9091:8080", "same length"]),
        ("services:\n  web:\n    command: run\n", &["services.web has no image"]),
        ("services:\n  web:\n    build: .\n", &["services.web has no image"]),
        ("services:\n  web:\n    image: web\n    networks: [nope]\n", &["network \"nope\"", "top-level `networks:`"]),
        ("services:\n  web:\n    image: web\n    secrets: [nope]\n", &["secret \"nope\""]),
        ("services:\n  web:\n    image: web\n    configs: [nope]\n", &["config \"nope\""]),
        ("services:\n  web:\n    image: web\n    volumes: ['nope:/data']\n", &["volume \"nope\""]),
        ("services:\n  web:\n    image: web\n    depends_on: [nope]\n", &["depends_on names \"nope\""]),
        ("services:\n  web:\n    image: web\n    replicas: 3\n", &["services.web.replicas", "the key `replicas` is unknown here"]),
        ("services:\n  web:\n    image: web\n    deploy: {replicas: many}\n", &["services.web.deploy.replicas", "many"]),
        ("services:\n  web:\n    image: web\n    stop_grace_period: soon\n", &["services.web.stop_grace_period", "soon"]),
        ("services:\n  web:\n    image: web\n    volumes: ['data']\n", &["services.web.volumes[0]", "absolute path"]),
        ("services:\n  web:\n    image: web\n    command: '$1'\n", &["services.web.command", "$$"]),
        ("", &["is empty"]),
        ("- a\n- b\n", &["not a mapping"]),
        ("secrets:\n  s: {}\nservices: {}\n", &["secrets.s needs exactly one of"]),
    ];
    for (text, wanted) in cases {
        let err = load_text(text).expect_err(text);
        for want in *wanted {
            assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
        }
        assert!(err.contains("compose.yml"), "{text:?}: {err:?} does not name the file");
        assert!(!err.contains('\n'), "{text:?}: {err:?} is more than one line");
    }
}

#[test]
fn port_short_syntax_covers_docker_s_forms() {
    let cases: &[(&str, &[(Option<u16>, u16)])] = &[
        ("3000", &[(None, 3000)]),
        ("3000-3001", &[(None, 3000), (None, 3001)]),
        ("8000:8000", &[(Some(8000), 8000)]),
        ("9090-9091:8080-8081", &[(Some(9090), 8080), (Some(9091), 8081)]),
        ("127.0.0.1:8001:8001", &[(Some(8001), 8001)]),
        ("[::1]:6001:6001", &[(Some(6001), 6001)]),
        ("6060:6060/udp", &[(Some(6060), 6060)]),
    ];
    for (text, want) in cases {
        let got: Vec<(Option<u16>, u16)> = parse_short_ports(text).expect(text).iter().map(|p| (p.published, p.target)).collect();
        assert_eq!(got, *want, "{text}");
    }
    assert_eq!(parse_short_ports("[::1]:6001:6001").unwrap()[0].host_ip.as_deref(), Some("::1"));
    for bad in ["9090-9091:8080", "0:80", "80:70000", "81-80:81-80", "80/sctp"] {
        assert!(parse_short_ports(bad).is_err(), "{bad}");
    }
}
