//! docker's top-level shortcuts (`docker ps`, `docker logs`, `docker
//! images`, ...): the same commands as their `container ...` and `image
//! ...` forms, reached by rewriting the verb before the command line is
//! parsed, as docker's own aliases do.

use std::ffi::OsString;

/// Shortcut and the command it stands for.
pub const SHORTCUTS: &[(&str, &[&str])] = &[
    ("ps", &["container", "ls"]),
    ("create", &["container", "create"]),
    ("start", &["container", "start"]),
    ("stop", &["container", "stop"]),
    ("restart", &["container", "restart"]),
    ("kill", &["container", "kill"]),
    ("rm", &["container", "rm"]),
    ("logs", &["container", "logs"]),
    ("top", &["container", "top"]),
    ("stats", &["container", "stats"]),
    ("pause", &["container", "pause"]),
    ("unpause", &["container", "unpause"]),
    ("rename", &["container", "rename"]),
    ("port", &["container", "port"]),
    ("wait", &["container", "wait"]),
    ("images", &["image", "ls"]),
    ("pull", &["image", "pull"]),
    ("push", &["image", "push"]),
    ("rmi", &["image", "rm"]),
    ("tag", &["image", "tag"]),
    ("history", &["image", "history"]),
    ("load", &["image", "load"]),
    ("import", &["image", "import"]),
];

/// Global options that take a value, so the verb is found after them.
const GLOBAL_WITH_VALUE: &[&str] = &["-H", "--host", "--tlscacert", "--tlscert", "--tlskey"];

/// `args` with a shortcut verb replaced by what it stands for.
pub fn expand(args: Vec<OsString>) -> Vec<OsString> {
    let mut index = 1;
    while let Some(arg) = args.get(index).and_then(|a| a.to_str()) {
        if !arg.starts_with('-') {
            break;
        }
        let takes_value = GLOBAL_WITH_VALUE.contains(&arg);
        index += if takes_value { 2 } else { 1 };
    }
    let Some(verb) = args.get(index).and_then(|a| a.to_str()) else { return args };
    let Some((_, full)) = SHORTCUTS.iter().find(|(short, _)| *short == verb) else { return args };
    let mut expanded = args[..index].to_vec();
    expanded.extend(full.iter().map(OsString::from));
    expanded.extend(args[index + 1..].iter().cloned());
    expanded
}

/// The shortcuts, for `--help`.
pub fn help() -> String {
    let mut text = String::from("Shortcuts, as in docker:\n");
    for (short, full) in SHORTCUTS {
        text.push_str(&format!("  {short:<10} {}\n", full.join(" ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn a_shortcut_becomes_its_command_after_global_options() {
        assert_eq!(expand(args("shoal ps -a")), args("shoal container ls -a"));
        assert_eq!(expand(args("shoal -H unix:///x.sock logs -f web")), args("shoal -H unix:///x.sock container logs -f web"));
        assert_eq!(expand(args("shoal --tlsverify --host tcp://m:4242 images")), args("shoal --tlsverify --host tcp://m:4242 image ls"));
        // Not a shortcut, or a shortcut word later on the line: untouched.
        assert_eq!(expand(args("shoal container rm ps")), args("shoal container rm ps"));
        assert_eq!(expand(args("shoal service ps web")), args("shoal service ps web"));
        assert_eq!(expand(args("shoal")), args("shoal"));
    }
}
