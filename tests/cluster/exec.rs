//! `shoal exec` through the real CLI and daemon into real containers: the
//! process is in the container's pid namespace and cgroup, takes the user,
//! directory and environment asked for, passes stdin and exit codes
//! through, and `-it` gives a working shell on a real pseudo-terminal.

use std::time::Duration;


use crate::support::node::{registry_with_busybox, LocalNode};
use crate::support::terminal::Terminal;
use crate::support::SHOAL;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn exec_joins_the_container_and_passes_io_and_exit_codes_through() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("exec");
    node.shoal(&["run", "-d", "--name", "box", &busybox.reference, "sleep", "1000"]).ok();

    // The container's pid namespace (its pid 1 is the container's command)
    // and its cgroup (the same as pid 1's).
    let inside = node.shoal(&["exec", "box", "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; cat /proc/self/cgroup; echo --; cat /proc/1/cgroup"]).ok().stdout;
    let mut parts = inside.splitn(2, '\n');
    assert_eq!(parts.next(), Some("sleep 1000 "), "{inside}");
    let (own, first) = parts.next().unwrap_or_default().split_once("--\n").expect("both cgroup files");
    assert!(!own.trim().is_empty());
    assert_eq!(own.trim(), first.trim(), "the exec is in the container's cgroup:\n{inside}");

    // User, working directory and environment as asked; the container's otherwise.
    let who = node.shoal(&["exec", "-u", "1000:1001", "-w", "/tmp", "-e", "GREETING=hi", "box", "sh", "-c", "id -u; id -g; pwd; echo $GREETING"]).ok();
    assert_eq!(who.stdout, "1000\n1001\n/tmp\nhi\n");
    let default = node.shoal(&["exec", "box", "sh", "-c", "id -u; pwd"]).ok();
    assert_eq!(default.stdout, "0\n/\n");

    // Exit codes and stderr pass through; stdin with -i.
    let failing = node.shoal(&["exec", "box", "sh", "-c", "echo oops >&2; exit 5"]);
    assert_eq!(failing.status.and_then(|s| s.code()), Some(5), "{failing:?}");
    assert!(failing.stderr.contains("oops"), "{}", failing.stderr);
    let echoed = node.shoal_with_input(&["exec", "-i", "box", "tr", "a-z", "A-Z"], b"hello\n").ok();
    assert_eq!(echoed.stdout, "HELLO\n");

    // -d returns at once; the process runs on.
    node.shoal(&["exec", "-d", "box", "sh", "-c", "sleep 0.2; echo done > /tmp/marker"]).ok();
    crate::support::wait_until(WAIT, "the detached exec's file", || {
        node.shoal(&["exec", "box", "cat", "/tmp/marker"]).success().then_some(())
    });

    // -it: a shell on a terminal, whose prompt and output arrive, and
    // whose exit code comes back.
    let [host_flag, host] = node.host_args();
    let mut terminal = Terminal::spawn(SHOAL, &[&host_flag, &host, "exec", "-it", "box", "sh"]);
    terminal.expect("# ", WAIT);
    terminal.send("echo $((6 * 7)); [ -t 0 ] && echo on-a-$((0))-terminal\r");
    terminal.expect("42", WAIT);
    terminal.expect("on-a-0-terminal", WAIT);
    terminal.send("exit 3\r");
    assert_eq!(terminal.wait(WAIT), Some(3), "the shell's exit code; the terminal showed:\n{}", terminal.screen);

    // Bad input: one sentence each.
    let missing = node.shoal(&["exec", "nobox", "true"]);
    assert!(!missing.success());
    assert!(missing.stderr.contains("nobox") && missing.stderr.trim().lines().count() == 1, "{}", missing.stderr);
    let no_command = node.shoal(&["exec", "box", "/bin/nope"]);
    assert!(!no_command.success());
    assert!(no_command.stderr.contains("/bin/nope"), "{}", no_command.stderr);
    node.shoal(&["container", "stop", "-t", "1", "box"]).ok();
    let stopped = node.shoal(&["exec", "box", "true"]);
    assert!(stopped.stderr.contains("not running"), "{}", stopped.stderr);
    node.shoal(&["container", "rm", "box"]).ok();
    node.assert_clean();
}
