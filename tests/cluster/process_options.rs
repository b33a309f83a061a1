//! docker's process options through the real CLI, managers and nodes:
//! `service create --cap-add --sysctl --ulimit --init --add-host --tty`
//! reach every task's container, `run` takes the same flags, and a bad
//! value is refused with a sentence naming it.

use crate::support::swarm::Swarm;
use crate::support::swarm::CONVERGE;
use crate::support::wait_until;

/// What each container prints about itself, then it waits.
const REPORT: &str = "grep CapEff /proc/self/status; echo somaxconn=$(cat /proc/sys/net/core/somaxconn); \
                      echo nofile=$(ulimit -n); echo pid=$$; grep db.test /etc/hosts; [ -t 1 ] && echo on-a-terminal; \
                      echo reported; exec sleep 1000";

const NET_ADMIN: u64 = 1 << 12;
const MKNOD: u64 = 1 << 27;

fn check_report(report: &str, tty: bool) {
    // Service logs prefix each line with the task's name.
    let mask = report
        .lines()
        .find_map(|l| l.split_once("CapEff:").map(|(_, hex)| hex))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).expect("a hex mask"))
        .unwrap_or_else(|| panic!("no CapEff in {report}"));
    assert!(mask & NET_ADMIN != 0 && mask & MKNOD == 0, "capabilities {mask:x}: {report}");
    assert!(report.contains("somaxconn=1111") && report.contains("nofile=2222"), "{report}");
    assert!(report.lines().all(|l| l.trim_end() != "pid=1" && !l.ends_with("| pid=1")), "the command is PID 1 despite --init: {report}");
    assert!(report.contains("pid="), "{report}");
    assert!(report.lines().any(|l| l.contains("198.18.0.5") && l.contains("db.test")), "{report}");
    assert_eq!(report.contains("on-a-terminal"), tty, "{report}");
}

#[test]
fn service_and_run_options_reach_the_containers() {
    let swarm = Swarm::up("popt");
    let options = [
        "--cap-add", "NET_ADMIN", "--cap-drop", "MKNOD", "--sysctl", "net.core.somaxconn=1111",
        "--ulimit", "nofile=2222:3333", "--init", "--add-host", "db.test:198.18.0.5",
    ];
    let mut flags = vec!["--replicas", "2", "--tty"];
    flags.extend_from_slice(&options);
    swarm.create("opts", &flags, &["sh", "-c", REPORT]).ok();
    swarm.wait_running("opts", 2);
    let logs = wait_until(CONVERGE, "both tasks' reports", || {
        let logs = swarm.shoal(&["service", "logs", "opts"]).ok().stdout;
        (logs.matches("reported").count() == 2).then_some(logs)
    });
    check_report(&logs, true);
    let inspect = swarm.shoal(&["service", "inspect", "opts"]).ok().stdout;
    assert!(inspect.contains("NET_ADMIN") && inspect.contains("net.core.somaxconn"), "inspect shows the options: {inspect}");

    // `service update` changes them: the tasks roll onto the new values.
    swarm.shoal(&["service", "update", "--sysctl-add", "net.core.somaxconn=1212", "--cap-drop", "NET_ADMIN", "--init=false", "opts"]).ok();
    let logs = wait_until(CONVERGE, "the updated tasks' reports", || {
        let logs = swarm.shoal(&["service", "logs", "opts"]).ok().stdout;
        (logs.matches("somaxconn=1212").count() == 2).then_some(logs)
    });
    assert!(logs.lines().filter(|l| l.trim_end().ends_with("| pid=1")).count() >= 2, "without --init the command is PID 1 again: {logs}");
    let inspect: serde_json::Value = swarm.shoal(&["service", "inspect", "opts"]).ok().stdout_json();
    let updated = &inspect[0]["spec"]["task"]["options"];
    assert_eq!(updated["sysctls"]["net.core.somaxconn"], "1212", "{updated}");
    assert_eq!(updated["cap_add"], serde_json::json!([]), "dropping NET_ADMIN takes it off the add list: {updated}");
    assert_eq!(updated["cap_drop"], serde_json::json!(["MKNOD", "NET_ADMIN"]), "{updated}");
    assert_eq!(updated["init"], false, "{updated}");

    // `run` on a node: the same flags, without a terminal.
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(&options);
    args.extend_from_slice(&[&swarm.image, "sh", "-c", "grep CapEff /proc/self/status; echo somaxconn=$(cat /proc/sys/net/core/somaxconn); echo nofile=$(ulimit -n); echo pid=$$; grep db.test /etc/hosts; [ -t 1 ] && echo on-a-terminal; echo reported"]);
    let run = swarm.cluster.shoal("worker1", &args).ok().stdout;
    check_report(&run, false);

    // Bad values: one sentence naming the value, and nothing created.
    for (flag, value, named) in [
        ("--sysctl", "vm.swappiness=1", "vm.swappiness"),
        ("--cap-add", "FLY", "FLY"),
        ("--ulimit", "nofile=2:1", "nofile"),
        ("--add-host", "db:nowhere", "db:nowhere"),
    ] {
        let out = swarm.cluster.shoal("worker1", &["run", "--rm", flag, value, &swarm.image, "true"]);
        assert!(!out.success() && out.stderr.contains(named) && out.stderr.trim().lines().count() == 1, "{flag} {value}: {out:?}");
    }
    swarm.shoal(&["service", "rm", "opts"]).ok();
}
