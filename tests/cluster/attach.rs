//! A container's own process on a terminal, through the real CLI and
//! daemon: `run -it` driven through a pseudo-terminal (prompt, output,
//! Ctrl-C, exit code), `run -i` with piped stdin, `start -ai` of a stopped
//! container, `attach` and its detach keys.

use std::time::Duration;

use crate::support::node::{registry_with_busybox, LocalNode};
use crate::support::terminal::Terminal;
use crate::support::{wait_until, SHOAL};

const WAIT: Duration = Duration::from_secs(20);

fn state(node: &LocalNode, name: &str) -> serde_json::Value {
    node.shoal(&["container", "inspect", name]).ok().stdout_json::<Vec<serde_json::Value>>().remove(0)["state"].clone()
}

#[test]
fn run_it_gives_a_shell_on_this_terminal_and_its_exit_code() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("runit");
    let [host_flag, host] = node.host_args();
    // As `docker run -it busybox sh`: the prompt arrives, the shell is on a
    // terminal, Ctrl-C interrupts its foreground job, `exit 3` is ours.
    let mut terminal = Terminal::spawn(SHOAL, &[&host_flag, &host, "run", "-it", "--name", "shell", &busybox.reference, "sh"]);
    terminal.expect("# ", WAIT);
    terminal.send("echo $((6 * 7)); [ -t 0 ] && echo on-a-$((0))-terminal\r");
    terminal.expect("42", WAIT);
    terminal.expect("on-a-0-terminal", WAIT);
    terminal.send("sleep 30\r");
    std::thread::sleep(Duration::from_millis(300));
    terminal.send("\u{3}");
    terminal.send("echo after-$((1))-interrupt\r");
    terminal.expect("after-1-interrupt", Duration::from_secs(5));
    terminal.send("exit 3\r");
    assert_eq!(terminal.wait(WAIT), Some(3), "the shell's exit code; the terminal showed:\n{}", terminal.screen);
    assert_eq!(state(&node, "shell")["exit_code"], 3);
    // The log keeps what the terminal showed.
    assert!(node.shoal(&["container", "logs", "shell"]).ok().stdout.contains("on-a-0-terminal"));

    // `start -ai` of the stopped container: the same shell, this run's output only.
    let mut terminal = Terminal::spawn(SHOAL, &[&host_flag, &host, "container", "start", "-ai", "shell"]);
    terminal.expect("# ", WAIT);
    terminal.send("echo second-$((2))-run; exit 0\r");
    terminal.expect("second-2-run", WAIT);
    assert_eq!(terminal.wait(WAIT), Some(0), "{}", terminal.screen);
    assert!(!terminal.screen.contains("on-a-0-terminal"), "no replay of the last run: {}", terminal.screen);

    // --rm: gone after, with its exit code still reported.
    let mut terminal = Terminal::spawn(SHOAL, &[&host_flag, &host, "run", "--rm", "-it", &busybox.reference, "sh", "-c", "exit 7"]);
    assert_eq!(terminal.wait(WAIT), Some(7), "{}", terminal.screen);
    node.shoal(&["container", "rm", "shell"]).ok();
    let left = node.shoal(&["container", "ls", "-a", "-q"]).ok().stdout;
    assert!(left.trim().is_empty(), "only the --rm one was left, and it is gone: {left}");
    node.assert_clean();
}

#[test]
fn run_i_pipes_stdin_and_attach_joins_a_running_container() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("attach");
    // -i without -t: stdin from a pipe, end-of-file when it ends.
    let upper = node.shoal_with_input(&["run", "-i", "--rm", &busybox.reference, "tr", "a-z", "A-Z"], b"hello\nworld\n").ok();
    assert_eq!(upper.stdout, "HELLO\nWORLD\n");
    let early = node.shoal_with_input(&["run", "-i", "--rm", &busybox.reference, "sh", "-c", "echo first; cat; echo last >&2"], b"middle\n").ok();
    assert_eq!((early.stdout.as_str(), early.stderr.as_str()), ("first\nmiddle\n", "last\n"), "nothing printed before the attach is lost");

    // A detached container with a terminal: attach, type, detach with Ctrl-P Ctrl-Q, attach again.
    let id = node.shoal(&["run", "-dit", "--name", "bg", &busybox.reference, "sh"]).ok().stdout.trim().to_string();
    assert_eq!(id.len(), 64);
    let [host_flag, host] = node.host_args();
    let mut terminal = Terminal::spawn(SHOAL, &[&host_flag, &host, "attach", "bg"]);
    std::thread::sleep(Duration::from_millis(300));
    terminal.send("echo attached-$((1))\r");
    terminal.expect("attached-1", WAIT);
    terminal.send("\u{10}\u{11}");
    assert_eq!(terminal.wait(WAIT), Some(0), "detaching ends the client: {}", terminal.screen);
    assert_eq!(state(&node, "bg")["status"], "running", "and leaves the container running");
    let mut terminal = Terminal::spawn(SHOAL, &[&host_flag, &host, "attach", "bg"]);
    std::thread::sleep(Duration::from_millis(300));
    terminal.send("exit 5\r");
    assert_eq!(terminal.wait(WAIT), Some(5), "{}", terminal.screen);
    wait_until(WAIT, "bg to exit", || (state(&node, "bg")["status"] == "exited").then_some(()));

    let stopped = node.shoal(&["attach", "bg"]);
    assert!(!stopped.success() && stopped.stderr.contains("not running") && stopped.stderr.trim().lines().count() == 1, "{}", stopped.stderr);
    node.shoal(&["container", "rm", "bg"]).ok();
    node.assert_clean();
}
