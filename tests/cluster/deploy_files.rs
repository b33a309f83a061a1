//! The parts of deploy/ that fit CI's time (the VMs themselves are brought
//! up by deploy/vagrant/up.sh, by hand): the systemd unit a real
//! installation uses passes `systemd-analyze verify` without a complaint,
//! the Vagrantfile passes `vagrant validate`, and every script parses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::run;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

#[test]
fn the_systemd_unit_verifies_without_a_complaint() {
    let unit = deploy().join("systemd/shoal.service");
    let out = run("systemd-analyze", &["verify", &unit.display().to_string()], Duration::from_secs(30));
    // verify exits 0 on many mistakes (an unknown value is "ignored"), so
    // anything it says counts; a missing binary is the one thing allowed.
    let complaints: Vec<&str> = out.stderr.lines().filter(|l| !l.contains("/usr/local/bin/shoal")).collect();
    assert!(out.success() && complaints.is_empty(), "{out:?}");
    let text = std::fs::read_to_string(&unit).expect("the unit");
    for wanted in ["Restart=on-failure", "--data-root /var/lib/shoal", "unix:///run/shoal/shoal.sock", "KillMode=process", "Delegate=yes"] {
        assert!(text.contains(wanted), "the unit has {wanted}");
    }
}

#[test]
fn the_vagrantfile_validates_and_the_scripts_parse() {
    let vagrant = deploy().join("vagrant");
    let dir = vagrant.display().to_string();
    let out = run("sh", &["-c", &format!("cd {dir} && vagrant validate")], Duration::from_secs(120));
    assert!(out.success() && out.stdout.contains("Vagrantfile validated successfully"), "{out:?}");
    for script in ["up.sh", "down.sh", "build-box.sh", "provision.sh", "form-swarm.sh"] {
        let path = vagrant.join(script).display().to_string();
        let out = run("bash", &["-n", &path], Duration::from_secs(10));
        assert!(out.success(), "{script}: {out:?}");
    }
}
