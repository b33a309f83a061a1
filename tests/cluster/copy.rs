//! `shoal cp` through the real CLI and daemon: files and directories in and
//! out by docker's rules, tar streams on `-`, stopped containers, links
//! that must stay inside the container, and bad input as one sentence.

use std::fs;
use std::path::Path;

use crate::support::node::{registry_with_busybox, sh, LocalNode};
use crate::support::SHOAL;

fn exec_out(node: &LocalNode, container: &str, script: &str) -> String {
    node.shoal(&["exec", container, "sh", "-c", script]).ok().stdout
}

#[test]
fn cp_moves_files_and_directories_both_ways_by_dockers_rules() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("cp");
    node.shoal(&["run", "-d", "--name", "box", &busybox.reference, "sleep", "3600"]).ok();
    let host = tempfile::tempdir().expect("a host directory");
    let here = host.path();
    fs::create_dir_all(here.join("src/sub")).unwrap();
    fs::write(here.join("src/a.txt"), "alpha\n").unwrap();
    fs::write(here.join("src/sub/b.txt"), "beta\n").unwrap();
    let at = |p: &str| here.join(p).to_string_lossy().into_owned();

    // In: a directory into an existing one keeps its name; to a new path
    // it becomes that path; a file gets the name it is given.
    let copied = node.shoal(&["cp", &at("src"), "box:/tmp"]).ok();
    assert!(copied.stderr.starts_with("Successfully copied ") && copied.stderr.contains("to box:/tmp"), "{}", copied.stderr);
    assert_eq!(exec_out(&node, "box", "cat /tmp/src/a.txt /tmp/src/sub/b.txt"), "alpha\nbeta\n");
    node.shoal(&["container", "cp", &at("src"), "box:/tmp/renamed"]).ok();
    assert_eq!(exec_out(&node, "box", "cat /tmp/renamed/sub/b.txt"), "beta\n");
    node.shoal(&["cp", "-q", &at("src/a.txt"), "box:/tmp/one.txt"]).ok();
    assert_eq!(exec_out(&node, "box", "cat /tmp/one.txt"), "alpha\n");
    // `DIR/.`: the contents, into an existing directory.
    exec_out(&node, "box", "mkdir /tmp/contents");
    node.shoal(&["cp", &format!("{}/.", at("src")), "box:/tmp/contents"]).ok();
    assert_eq!(exec_out(&node, "box", "ls /tmp/contents | tr '\\n' ' '"), "a.txt sub ");

    // Out: the same rules on the host side.
    exec_out(&node, "box", "mkdir -p /data/logs && echo one > /data/logs/1.log && echo two > /data/top.txt && ln -s top.txt /data/link");
    node.shoal(&["cp", "box:/data", &at("out")]).ok();
    assert_eq!(fs::read_to_string(here.join("out/logs/1.log")).unwrap(), "one\n");
    assert_eq!(fs::read_link(here.join("out/link")).unwrap(), Path::new("top.txt"), "a link comes out as a link");
    node.shoal(&["cp", "box:/data", &at("out")]).ok();
    assert_eq!(fs::read_to_string(here.join("out/data/top.txt")).unwrap(), "two\n", "into an existing directory, under its name");
    node.shoal(&["cp", "box:/data/top.txt", &at("top-copy.txt")]).ok();
    assert_eq!(fs::read_to_string(here.join("top-copy.txt")).unwrap(), "two\n");
    node.shoal(&["cp", "-L", "box:/data/link", &at("followed.txt")]).ok();
    assert_eq!(fs::read_to_string(here.join("followed.txt")).unwrap(), "two\n", "-L copies what the link points to");

    // `-`: tar streams out and in, as tar itself reads and writes them.
    let shoal = format!("{SHOAL} {}", node.host_args().join(" "));
    let listing = sh(&format!("{shoal} cp box:/data - | tar -tf - | sed 's,/$,,' | sort")).ok();
    assert_eq!(listing.stdout, "data\ndata/link\ndata/logs\ndata/logs/1.log\ndata/top.txt\n");
    exec_out(&node, "box", "mkdir /tmp/stream");
    sh(&format!("cd {} && tar -cf - src | {shoal} cp - box:/tmp/stream", here.display())).ok();
    assert_eq!(exec_out(&node, "box", "cat /tmp/stream/src/sub/b.txt"), "beta\n");

    // A stopped container's files still come out.
    node.shoal(&["container", "stop", "-t", "1", "box"]).ok();
    node.shoal(&["cp", "box:/tmp/one.txt", &at("from-stopped.txt")]).ok();
    assert_eq!(fs::read_to_string(here.join("from-stopped.txt")).unwrap(), "alpha\n");
    node.shoal(&["container", "rm", "box"]).ok();
    node.assert_clean();
}

#[test]
fn cp_never_follows_a_link_out_of_the_container() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("cp-links");
    node.shoal(&["run", "-d", "--name", "trap", &busybox.reference, "sleep", "3600"]).ok();
    // Links that would lead to the host's files if resolved on the host.
    exec_out(
        &node,
        "trap",
        "echo container-secret > /etc/shadow && ln -s /etc/shadow /tmp/shadow && mkdir -p /tmp/up && ln -s ../../../../../../etc /tmp/up/etc && ln -s /etc /tmp/etc",
    );
    let host = tempfile::tempdir().expect("a host directory");
    let out = host.path().join("shadow");
    node.shoal(&["cp", "-L", "trap:/tmp/shadow", out.to_str().unwrap()]).ok();
    assert_eq!(fs::read_to_string(&out).unwrap(), "container-secret\n", "the container's /etc/shadow, not the host's");
    let out = host.path().join("via-dots");
    node.shoal(&["cp", "trap:/tmp/up/etc/shadow", out.to_str().unwrap()]).ok();
    assert_eq!(fs::read_to_string(&out).unwrap(), "container-secret\n", "`..` stops at the container's root");

    // In through an absolute link: lands in the container's /etc.
    let marker = format!("shoal-cp-test-{}", std::process::id());
    let file = host.path().join(&marker);
    fs::write(&file, "inside\n").unwrap();
    node.shoal(&["cp", file.to_str().unwrap(), "trap:/tmp/etc/"]).ok();
    assert_eq!(exec_out(&node, "trap", &format!("cat /etc/{marker}")), "inside\n");
    assert!(!Path::new("/etc").join(&marker).exists(), "nothing written to the host's /etc");

    // An archive that climbs out is refused, whole.
    sh(&format!("cd {} && tar -cPf climb.tar --transform 's,^,../,' {marker}", host.path().display())).ok();
    let refused = node.shoal_with_input(&["cp", "-", "trap:/tmp/up"], &fs::read(host.path().join("climb.tar")).unwrap());
    assert!(!refused.success() && refused.stderr.contains("leaves the destination"), "{}", refused.stderr);
    assert_eq!(exec_out(&node, "trap", &format!("ls /tmp/{marker} 2>&1 | grep -c 'No such file'")), "1\n");
    node.shoal(&["container", "rm", "-f", "trap"]).ok();
    node.assert_clean();
}

#[test]
fn bad_cp_input_is_one_sentence_and_writes_nothing() {
    let (_registry, busybox) = registry_with_busybox();
    let node = LocalNode::start("cp-bad");
    node.shoal(&["run", "-d", "--name", "cb", &busybox.reference, "sleep", "3600"]).ok();
    exec_out(&node, "cb", "echo plain > /tmp/plain");
    let host = tempfile::tempdir().expect("a host directory");
    let file = host.path().join("f.txt");
    fs::write(&file, "x").unwrap();
    let file = file.to_str().unwrap();
    let dir = host.path().to_str().unwrap();

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["cp", file, "nosuch:/tmp"], "no such container: nosuch"),
        (vec!["cp", file, "cb:/nope/deeper/f.txt"], "the directory /nope/deeper does not exist in container cb"),
        (vec!["cp", file, "cb:/tmp/newdir/"], "does not exist in container cb"),
        (vec!["cp", dir, "cb:/tmp/plain"], "cannot copy a directory onto the file /tmp/plain"),
        (vec!["cp", "cb:/no/such/file", dir], "there is no /no/such/file in container cb"),
        (vec!["cp", "/no/such/host/file", "cb:/tmp"], "there is no /no/such/host/file on this host"),
        (vec!["cp", file, dir], "write one side as CONTAINER:PATH"),
        (vec!["cp", "cb:/etc", "cb:/tmp"], "between two containers"),
    ];
    for (args, expected) in cases {
        let out = node.shoal(&args);
        assert!(!out.success(), "{args:?} succeeded");
        let stderr = out.stderr.trim();
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one sentence: {stderr}");
    }
    assert_eq!(exec_out(&node, "cb", "ls /nope /tmp/newdir 2>&1 | grep -c 'No such file'"), "2\n", "nothing half-made");
    node.shoal(&["container", "rm", "-f", "cb"]).ok();
    node.assert_clean();
}
