//! The default seccomp profile, compact and Docker-like in effect.
//!
//! Docker's own profile is an allow-list of ~350 syscalls with EPERM for
//! the rest. Compiling that into BPF costs time on every container start,
//! so this profile inverts it: everything is allowed except the syscalls
//! Docker refuses to a container without extra capabilities (kernel
//! modules, kexec, keyrings, tracing, mounting, namespace changes, clock
//! setting, ...), which fail with EPERM as they do under Docker. The
//! capability set (see `spec.rs`) already makes most of them fail; the
//! filter also closes the ones a capability does not guard (keyctl, bpf
//! for unprivileged users, userfaultfd, perf_event_open, ...).

use serde_json::{json, Value};

/// Refused with EPERM whatever the arguments.
const BLOCKED: &[&str] = &[
    // Kernel and machine control.
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "reboot",
    "swapon",
    "swapoff",
    "syslog",
    "acct",
    "quotactl",
    "quotactl_fd",
    "nfsservctl",
    "_sysctl",
    "sysfs",
    "uselib",
    "ustat",
    "lookup_dcookie",
    "vm86",
    "vm86old",
    "iopl",
    "ioperm",
    // Clocks shared with the host.
    "clock_settime",
    "clock_settime64",
    "clock_adjtime",
    "clock_adjtime64",
    "settimeofday",
    "stime",
    "adjtimex",
    // Keyrings are not namespaced.
    "keyctl",
    "add_key",
    "request_key",
    // Looking into or tracing other processes.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "perf_event_open",
    "bpf",
    "userfaultfd",
    "fanotify_init",
    // Filesystem and namespace changes.
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    "open_by_handle_at",
    "name_to_handle_at",
    // NUMA memory placement of other processes.
    "mbind",
    "migrate_pages",
    "move_pages",
    "set_mempolicy",
];

/// `clone` flags that create namespaces (CLONE_NEWNS, NEWCGROUP, NEWUTS,
/// NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME): Docker refuses clone with
/// any of them.
const CLONE_NAMESPACE_FLAGS: [u64; 8] = [0x0002_0000, 0x0200_0000, 0x0400_0000, 0x0800_0000, 0x1000_0000, 0x2000_0000, 0x4000_0000, 0x80];

/// The profile as the OCI spec's `linux.seccomp` value.
pub fn default_profile() -> Value {
    let eperm = libc::EPERM as u32;
    let mut syscalls = vec![json!({ "names": BLOCKED, "action": "SCMP_ACT_ERRNO", "errnoRet": eperm })];
    // One rule per flag, "(flags & F) == F": conditions within a rule are
    // ANDed, and mask == value reads the same whichever of value/valueTwo
    // a runtime takes as the mask. clone's flags are argument 0 on x86-64.
    for flag in CLONE_NAMESPACE_FLAGS {
        syscalls.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": eperm,
            "args": [{ "index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ" }]
        }));
    }
    // clone3 passes its flags in memory where a filter cannot look; ENOSYS
    // makes libcs fall back to clone, as under Docker.
    syscalls.push(json!({ "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS as u32 }));
    json!({ "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_NATIVE"], "syscalls": syscalls })
}
