//! The parts of deploy/ that fit CI's time (the VMs themselves are brought
//! up by deploy/vagrant/up.sh, by hand): the systemd unit a real
//! installation uses passes `systemd-analyze verify` without a complaint,
//! the Vagrantfile passes `vagrant validate`, every script parses, and the
//! box builds from Debian's packages with what `vagrant up` needs inside.

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
    // anything it says counts; a missing binary is the one thing allowed
    // (systemd 252.39 also exits 1 for it, earlier 252 releases 0).
    let (missing_binary, complaints): (Vec<&str>, Vec<&str>) =
        out.stderr.lines().partition(|l| l.contains("/usr/local/bin/shoal"));
    assert!(complaints.is_empty() && (out.success() || !missing_binary.is_empty()), "{out:?}");
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
    for script in ["up.sh", "down.sh", "build-box.sh", "provision.sh", "form-swarm.sh", "test-cluster.sh"] {
        let path = vagrant.join(script).display().to_string();
        let out = run("bash", &["-n", &path], Duration::from_secs(10));
        assert!(out.success(), "{script}: {out:?}");
    }
}

/// Unmounts and detaches what the box check attached, also when it fails.
struct Attached {
    mountpoint: PathBuf,
    device: Option<String>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = run("umount", &[&self.mountpoint.display().to_string()], Duration::from_secs(30));
        if let Some(device) = &self.device {
            let _ = run("losetup", &["-d", device], Duration::from_secs(30));
        }
    }
}

#[test]
fn the_box_builds_offline_from_debian_packages_and_holds_what_vagrant_needs() {
    let vagrant = deploy().join("vagrant");
    let script = vagrant.join("build-box.sh").display().to_string();
    let work = tempfile::tempdir_in("/var/tmp").expect("work dir");
    let box_dir = work.path().join("box");
    let box_dir_text = box_dir.display().to_string();

    // Without the tools (debootstrap lives in /usr/sbin): one sentence
    // naming what to install.
    let env_box = format!("SHOAL_BOX_DIR={box_dir_text}");
    let out = run("env", &[&env_box, "PATH=/usr/bin:/bin", "/bin/bash", &script], Duration::from_secs(30));
    assert!(!out.success() && out.stderr.contains("apt-get install debootstrap"), "{out:?}");

    let out = run("env", &[&env_box, "/bin/bash", &script], Duration::from_secs(20 * 60));
    assert!(out.success(), "{out:?}");
    for file in ["shoal-bookworm.box", "vmlinuz", "initrd.img"] {
        assert!(box_dir.join(file).is_file(), "{file} is built");
    }
    // Cached: a second run does nothing.
    let out = run("env", &[&env_box, "/bin/bash", &script], Duration::from_secs(30));
    assert!(out.success() && out.stdout.contains("already built"), "{out:?}");

    // The kernel is one the VMs can boot directly (a bzImage).
    let kernel = std::fs::read(box_dir.join("vmlinuz")).expect("kernel");
    assert_eq!(kernel.get(0x202..0x206), Some(&b"HdrS"[..]), "vmlinuz is a bzImage");

    // The box: libvirt metadata, a Vagrantfile, a qcow2 disk.
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    run("tar", &["-C", &unpacked.display().to_string(), "-xzf", &box_dir.join("shoal-bookworm.box").display().to_string()], Duration::from_secs(300)).ok();
    let metadata = std::fs::read_to_string(unpacked.join("metadata.json")).expect("metadata.json");
    assert!(metadata.contains(r#""provider": "libvirt""#) && metadata.contains(r#""format": "qcow2""#), "{metadata}");
    assert!(unpacked.join("Vagrantfile").is_file());
    let disk = unpacked.join("box.img");
    let info = run("qemu-img", &["info", &disk.display().to_string()], Duration::from_secs(30)).ok();
    assert!(info.stdout.contains("file format: qcow2"), "{info:?}");

    // Inside the disk: what `vagrant up` and provision.sh rely on.
    let raw = work.path().join("root.raw");
    run("qemu-img", &["convert", "-O", "raw", &disk.display().to_string(), &raw.display().to_string()], Duration::from_secs(600)).ok();
    std::fs::remove_file(&disk).unwrap();
    let mountpoint = work.path().join("root");
    std::fs::create_dir(&mountpoint).unwrap();
    let mut attached = Attached { mountpoint: mountpoint.clone(), device: None };
    let device = run("losetup", &["-f", "--show", "-r", &raw.display().to_string()], Duration::from_secs(30)).ok().stdout.trim().to_string();
    attached.device = Some(device.clone());
    run("mount", &["-o", "ro", &device, &mountpoint.display().to_string()], Duration::from_secs(30)).ok();
    let read = |path: &str| std::fs::read_to_string(mountpoint.join(path)).unwrap_or_else(|e| panic!("{path} in the box: {e}"));
    assert!(read("home/vagrant/.ssh/authorized_keys").contains("vagrant insecure public key"), "Vagrant's insecure key lets `vagrant up` in");
    assert!(read("etc/sudoers.d/vagrant").contains("NOPASSWD: ALL"));
    assert!(read("etc/network/interfaces").contains("iface eth0 inet dhcp"), "the management network comes up by DHCP");
    assert!(read("etc/fstab").contains("LABEL=root"));
    // The unit link is absolute (/lib/...), so only its presence is checked.
    assert!(mountpoint.join("etc/systemd/system/multi-user.target.wants/ssh.service").symlink_metadata().is_ok(), "sshd starts at boot");
    for path in ["usr/bin/rsync", "usr/sbin/sshd", "bin/busybox", "usr/sbin/nft", "sbin/ip"] {
        assert!(mountpoint.join(path).exists(), "{path} is in the box");
    }
    drop(attached);
}
