//! `container top`: the processes of a container as `ps -ef` shows them,
//! read from the host's /proc for each pid in the container's cgroup (as
//! docker lists what `ps` prints for those pids).

use serde::Serialize;

/// One process, in `ps -ef`'s columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    pub uid: String,
    pub pid: i32,
    pub ppid: i32,
    /// HH:MM of its start, today's clock (or the date for older ones).
    pub start: String,
    pub tty: String,
    /// CPU time used, HH:MM:SS.
    pub time: String,
    pub command: String,
}

/// `ps -ef`'s header, in [`Process`]'s order.
pub const TITLES: [&str; 8] = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"];

impl Process {
    pub fn row(&self) -> Vec<String> {
        vec![
            self.uid.clone(),
            self.pid.to_string(),
            self.ppid.to_string(),
            "0".into(),
            self.start.clone(),
            self.tty.clone(),
            self.time.clone(),
            self.command.clone(),
        ]
    }
}

/// What /proc says of `pid`; None once it has gone.
pub fn read(pid: i32) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses.
    let (name_part, rest) = stat.rsplit_once(')')?;
    let name = name_part.split_once('(').map(|(_, n)| n).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, tty 7, utime 14,
    // stime 15, starttime 22.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let ticks = clock_ticks();
    let cpu_secs = (field(14) + field(15)) / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("?")
        .to_string();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let command = if cmdline.is_empty() {
        format!("[{name}]")
    } else {
        String::from_utf8_lossy(&cmdline).trim_end_matches('\0').replace('\0', " ")
    };
    Some(Process {
        uid: user_name(&uid),
        pid,
        ppid: field(4) as i32,
        start: start_clock(field(22) / ticks),
        tty: tty_name(field(7)),
        time: format!("{:02}:{:02}:{:02}", cpu_secs / 3600, cpu_secs / 60 % 60, cpu_secs % 60),
        command,
    })
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// The host's name for `uid` (as ps prints it), else the number.
fn user_name(uid: &str) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)? == uid).then(|| name.to_string())
        })
        .unwrap_or_else(|| uid.to_string())
}

/// `pts/N` for a pseudo-terminal, `?` for none (as ps prints them).
fn tty_name(device: u64) -> String {
    let (major, minor) = ((device >> 8) & 0xfff, (device & 0xff) | ((device >> 12) & 0xfff00));
    match major {
        0 => "?".into(),
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        _ => format!("{major}:{minor}"),
    }
}

/// The process's start as HH:MM of the host clock.
fn start_clock(seconds_after_boot: u64) -> String {
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let now = std::time::SystemTime::now();
    let ago = std::time::Duration::from_secs_f64((uptime - seconds_after_boot as f64).max(0.0));
    let started = now.checked_sub(ago).unwrap_or(now);
    let text = humantime::format_rfc3339_seconds(started).to_string();
    // 2026-12-07T01:02:03Z -> 01:02 (UTC, as the daemon's clock runs).
    text.get(11..16).unwrap_or("?").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_as_ps_would() {
        let me = read(std::process::id() as i32).expect("this process");
        assert_eq!(me.pid, std::process::id() as i32);
        assert_eq!(me.ppid, nix::unistd::getppid().as_raw());
        assert_eq!(me.start.len(), 5, "{}", me.start);
        assert!(me.time.len() == 8 && me.command.contains("shoal_runtime"), "{me:?}");
        assert_eq!(TITLES.len(), me.row().len());
        assert!(read(i32::MAX).is_none());
    }
}
