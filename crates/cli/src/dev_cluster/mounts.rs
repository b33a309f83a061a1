//! Unmounting whatever daemons and their containers left mounted below a
//! cluster's directories (overlayfs rootfs, tmpfs secrets, ...).

use std::fs;
use std::path::Path;

use anyhow::Context;
use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

/// Detaches every mount at or below `dir`, deepest first.
pub fn unmount_below(dir: &Path) -> anyhow::Result<()> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .context("could not read /proc/self/mountinfo")?;
    let mut targets: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape)
        .filter(|target| Path::new(target).starts_with(dir))
        .collect();
    // Deepest first, so no mount hides another that still needs detaching.
    targets.sort_by_key(|target| std::cmp::Reverse(target.len()));
    targets.dedup();
    for target in targets {
        // Lazy detach: a process of a dying container may still hold it open.
        match umount2(target.as_str(), MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("could not unmount {target}")),
        }
    }
    Ok(())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match octal_at(bytes, i) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The byte encoded by `\ooo` at `i`, if that is what is there.
fn octal_at(bytes: &[u8], i: usize) -> Option<u8> {
    if bytes[i] != b'\\' {
        return None;
    }
    let digits = bytes.get(i + 1..i + 4)?;
    if !digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
    u8::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn unescapes_mountinfo_octal() {
        assert_eq!(super::unescape(r"/run/a\040b"), "/run/a b");
        assert_eq!(super::unescape(r"/plain"), "/plain");
    }
}
