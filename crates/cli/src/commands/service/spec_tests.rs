//! Parsing of `service create` / `service update` flags into specs.

use super::*;
use clap::Parser;

#[derive(Parser)]
struct Create {
    #[command(flatten)]
    args: CreateArgs,
}

#[derive(Parser)]
struct Update {
    #[command(flatten)]
    args: UpdateArgs,
}

fn create(args: &[&str]) -> CliResult<pb::ServiceSpec> {
    let parsed = Create::try_parse_from(std::iter::once("create").chain(args.iter().copied())).expect("clap parses");
    parsed.args.spec()
}

fn update(args: &[&str]) -> UpdateArgs {
    Update::try_parse_from(std::iter::once("update").chain(args.iter().copied())).expect("clap parses").args
}

fn err(result: CliResult<pb::ServiceSpec>) -> String {
    result.unwrap_err().to_string()
}

#[test]
fn create_builds_the_whole_spec() {
    let spec = create(&[
        "--name", "web", "--replicas", "3", "-e", "A=1", "--label", "tier=front", "--constraint", "node.labels.zone==eu",
        "--placement-pref", "spread=node.labels.zone", "--replicas-max-per-node", "2", "--reserve-cpu", "0.5",
        "--reserve-memory", "64m", "--limit-cpu", "1", "--limit-memory", "128m", "--limit-pids", "100",
        "--restart-condition", "on-failure", "--restart-delay", "1m30s", "--restart-max-attempts", "4",
        "--restart-window", "500ms", "--mount", "type=tmpfs,target=/tmp", "--stop-grace-period", "20s",
        "--stop-signal", "SIGINT", "--hostname", "web-{{.Task.Slot}}", "-w", "/srv", "-u", "app", "--entrypoint",
        "/bin/sh -c", "--read-only", "-d", "busybox:1", "echo", "-n", "hi",
    ])
    .unwrap();
    assert_eq!((spec.name.as_str(), spec.mode.as_str(), spec.replicas), ("web", "replicated", 3));
    assert_eq!(spec.labels["tier"], "front");
    let task = spec.task.unwrap();
    assert_eq!(task.image, "busybox:1");
    assert_eq!(task.args, ["echo", "-n", "hi"]);
    assert_eq!(task.entrypoint, ["/bin/sh", "-c"]);
    assert_eq!(task.env, ["A=1"]);
    assert_eq!((task.workdir.as_str(), task.user.as_str(), task.hostname.as_str()), ("/srv", "app", "web-{{.Task.Slot}}"));
    assert!(task.read_only);
    assert_eq!((task.stop_signal.as_str(), task.stop_grace_ms), ("SIGINT", 20_000));
    assert_eq!(task.mounts.len(), 1);
    let r = task.resources.unwrap();
    assert_eq!(
        (r.reserve_nano_cpus, r.reserve_memory, r.limit_nano_cpus, r.limit_memory, r.pids_limit),
        (500_000_000, 64 << 20, 1_000_000_000, 128 << 20, 100)
    );
    let restart = spec.restart.unwrap();
    assert_eq!(
        (restart.condition.as_str(), restart.delay_ms, restart.max_attempts, restart.window_ms),
        ("on-failure", 90_000, 4, 500)
    );
    let placement = spec.placement.unwrap();
    assert_eq!(placement.constraints, ["node.labels.zone==eu"]);
    assert_eq!(placement.spread, ["node.labels.zone"]);
    assert_eq!(placement.max_replicas_per_node, 2);
}

#[test]
fn create_defaults_like_docker() {
    let spec = create(&["busybox"]).unwrap();
    assert_eq!((spec.mode.as_str(), spec.replicas), ("replicated", 1));
    let (adjective, noun) = spec.name.split_once('_').unwrap();
    assert!(ADJECTIVES.contains(&adjective) && NOUNS.contains(&noun), "{}", spec.name);
    let restart = spec.restart.unwrap();
    assert_eq!((restart.condition.as_str(), restart.delay_ms), ("any", 5000));
    let global = create(&["--mode", "global", "busybox"]).unwrap();
    assert_eq!((global.mode.as_str(), global.replicas), ("global", 0));
    // Restart flags adjust docker's defaults rather than zeroing them.
    let spec = create(&["--restart-condition", "none", "busybox"]).unwrap();
    assert_eq!(spec.restart.unwrap().delay_ms, 5000);
}

#[test]
fn create_refuses_bad_flags_in_one_sentence() {
    let cases: &[(&[&str], &str)] = &[
        (&["--replicas", "-1", "x"], "--replicas \"-1\" is invalid; use a whole number of 0 or more"),
        (&["--replicas", "lots", "x"], "--replicas \"lots\" is invalid; use a whole number of 0 or more"),
        (&["--replicas", "2", "--mode", "global", "x"], "--replicas cannot be used with --mode global; drop one of them"),
        (&["--mode", "everywhere", "x"], "--mode \"everywhere\" is invalid; use replicated or global"),
        (&["--placement-pref", "foo", "x"], "--placement-pref \"foo\" is invalid; use spread=node.labels.KEY"),
        (&["--placement-pref", "spread=zone", "x"], "--placement-pref \"spread=zone\" is invalid; use spread=node.labels.KEY"),
        (&["--restart-condition", "always", "x"], "--restart-condition \"always\" is invalid; use none, on-failure or any"),
        (&["--restart-delay", "5", "x"], "--restart-delay \"5\" is invalid; use a duration such as 5s, 1m30s or 500ms"),
        (&["--limit-pids", "-3", "x"], "--limit-pids \"-3\" is invalid; use a whole number of 0 or more"),
        (
            &["--constraint", "node.labels.zone=a", "x"],
            "--constraint \"node.labels.zone=a\" is invalid; use KEY==VALUE or KEY!=VALUE, e.g. node.labels.zone==eu",
        ),
    ];
    for (args, expected) in cases {
        assert_eq!(&err(create(args)), expected, "{args:?}");
    }
    for (args, named) in [
        (&["--reserve-memory", "lots", "x"][..], "--reserve-memory \"lots\""),
        (&["--limit-cpu", "-1", "x"][..], "--limit-cpu \"-1\""),
        (&["--mount", "type=nfs,target=/x", "x"][..], "type=nfs"),
        (&["--entrypoint", "sh -c 'oops", "x"][..], "unterminated quote"),
        (&["--reserve-memory", "1g", "--limit-memory", "64m", "x"][..], "larger than --limit-memory"),
    ] {
        let message = err(create(args));
        assert!(message.contains(named) && !message.contains('\n'), "{args:?}: {message}");
    }
}

#[test]
fn update_reads_modifies_and_keeps_the_rest() {
    let mut spec = create(&[
        "--name", "web", "-e", "A=1", "-e", "B=2", "--label", "x=1", "--constraint", "node.role == worker",
        "--mount", "type=tmpfs,target=/tmp", "--limit-memory", "64m", "busybox:1",
    ])
    .unwrap();
    let change = update(&[
        "--image", "busybox:2", "--env-add", "B=3", "--env-add", "C=4", "--env-rm", "A", "--label-rm", "x",
        "--label-add", "y=2", "--replicas", "5", "--constraint-rm", "node.role==worker", "--constraint-add",
        "node.labels.zone==eu", "--limit-memory", "0", "--restart-max-attempts", "3", "--mount-rm", "/tmp",
        "--read-only", "web",
    ])
    .change()
    .unwrap();
    change.apply(&mut spec).unwrap();
    assert_eq!(spec.replicas, 5);
    assert_eq!(spec.labels.len(), 1);
    assert_eq!(spec.labels["y"], "2");
    let task = spec.task.as_ref().unwrap();
    assert_eq!(task.image, "busybox:2");
    assert_eq!(task.env, ["B=3", "C=4"]);
    assert!(task.mounts.is_empty());
    assert!(task.read_only);
    assert_eq!(task.resources.unwrap().limit_memory, 0);
    assert_eq!(spec.placement.as_ref().unwrap().constraints, ["node.labels.zone==eu"]);
    let restart = spec.restart.as_ref().unwrap();
    assert_eq!((restart.condition.as_str(), restart.delay_ms, restart.max_attempts), ("any", 5000, 3));

    let undo = update(&["--read-only=false", "web"]).change().unwrap();
    undo.apply(&mut spec).unwrap();
    assert!(!spec.task.unwrap().read_only);
}

#[test]
fn global_services_take_no_replica_count() {
    let mut spec = create(&["--name", "agent", "--mode", "global", "busybox"]).unwrap();
    let message = SpecChange::scale(3).apply(&mut spec).unwrap_err().to_string();
    assert!(message.starts_with("service agent is global") && !message.contains('\n'), "{message}");
    assert!(update(&["--replicas", "-2", "agent"]).change().unwrap_err().to_string().contains("\"-2\""));
}

#[test]
fn scale_arguments() {
    assert_eq!(parse_scale("web=3").unwrap(), ("web".to_string(), 3));
    assert_eq!(parse_scale("web").unwrap_err().to_string(), "\"web\" is invalid; use SERVICE=REPLICAS, e.g. web=3");
    assert_eq!(
        parse_scale("web=-1").unwrap_err().to_string(),
        "replica count \"-1\" for web is invalid; use a whole number of 0 or more"
    );
    assert!(parse_scale("=3").is_err());
}

#[test]
fn shell_words() {
    assert_eq!(flags::shell_split("--args", "sh -c 'echo a  b' \"x \\\"y\\\"\" z\\ w").unwrap(), ["sh", "-c", "echo a  b", "x \"y\"", "z w"]);
    assert!(flags::shell_split("--args", "").unwrap().is_empty());
    assert_eq!(flags::shell_split("--args", "''").unwrap(), [""]);
}

#[test]
fn networks_take_the_short_and_the_long_form() {
    let spec = create(&["--network", "front", "--network", "name=back,alias=db,alias=store", "busybox"]).unwrap();
    let networks = spec.task.unwrap().networks;
    assert_eq!(networks.len(), 2);
    assert_eq!((networks[0].target.as_str(), networks[0].aliases.len()), ("front", 0));
    assert_eq!((networks[1].target.as_str(), networks[1].aliases.clone()), ("back", vec!["db".to_string(), "store".to_string()]));
    for (bad, named) in [("name=", "name="), ("alias=x", "names no network"), ("name=a,colour=red", "colour=red"), ("", "\"\"")] {
        let error = err(create(&["--network", bad, "busybox"]));
        assert!(error.contains(named), "{bad}: {error}");
    }
}

#[test]
fn network_add_and_rm_match_by_name_or_id() {
    let mut spec = create(&["--network", "front", "busybox"]).unwrap();
    // As `service inspect` returns it: the id as target, the name beside it.
    let attached = &mut spec.task.as_mut().unwrap().networks[0];
    attached.target = "n1d".into();
    attached.name = "front".into();
    let change = update(&["--network-rm", "front", "--network-add", "name=back,alias=api", "web"]).change().unwrap();
    change.apply(&mut spec).unwrap();
    let networks = spec.task.unwrap().networks;
    assert_eq!(networks.iter().map(|n| n.target.as_str()).collect::<Vec<_>>(), ["back"]);
    assert_eq!(networks[0].aliases, ["api"]);
}
