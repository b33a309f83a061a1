//! The crate's one error type. Every message is a single sentence that names
//! the value at fault, so callers can show it to people as it is.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A name that cannot become a namespace file, link name or sandbox id.
    #[error("{what} {name:?} is invalid: {rule}")]
    InvalidName {
        what: &'static str,
        name: String,
        rule: &'static str,
    },

    /// A value of a configuration (MTU, prefix, address) that is out of range.
    #[error("{what} {value} is invalid: {rule}")]
    InvalidValue {
        what: &'static str,
        value: String,
        rule: &'static str,
    },

    #[error("network namespace {} already exists; delete it first or pick another name", .path.display())]
    NetnsExists { path: PathBuf },

    #[error("network namespace {} does not exist", .path.display())]
    NetnsNotFound { path: PathBuf },

    /// Creating, mounting, entering or removing a namespace failed.
    #[error("could not {action} network namespace {}: {source}", .path.display())]
    Netns {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("link {name} does not exist in network namespace {netns}")]
    LinkNotFound { name: String, netns: String },

    #[error(
        "link {name} already exists in network namespace {netns}; delete it or pick another name"
    )]
    LinkExists { name: String, netns: String },

    /// A link of the expected name exists but is something else.
    #[error("link {name} in network namespace {netns} is a {found}, not a {expected}; delete it so it can be recreated")]
    WrongLinkKind {
        name: String,
        netns: String,
        expected: &'static str,
        found: String,
    },

    /// A netlink request the kernel refused (or the socket failed).
    #[error("could not {action} in network namespace {netns}: {source}")]
    Netlink {
        action: String,
        netns: String,
        #[source]
        source: io::Error,
    },

    #[error("sysctl {key} is invalid: use a path below net/ such as net/ipv4/ip_forward")]
    InvalidSysctl { key: String },

    #[error("could not {action} sysctl {key} in network namespace {netns}: {source}")]
    Sysctl {
        action: &'static str,
        key: String,
        netns: String,
        #[source]
        source: io::Error,
    },

    /// A worker thread inside a namespace died; a bug, not an input problem.
    #[error("a thread working in network namespace {} panicked", .path.display())]
    ThreadPanicked { path: PathBuf },

    #[error("could not {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The node's WireGuard device refused or failed (its own sentence).
    #[error("{0}")]
    Wireguard(String),

    /// The firewall could not be applied (its own sentence).
    #[error("{0}")]
    Firewall(String),

    /// Something the call needs is not set up on this node yet.
    #[error("{0}")]
    NotReady(String),
}

impl NetError {
    /// The OS error number behind a failed system or netlink call, if any;
    /// lets callers treat e.g. `EEXIST` or `ENODEV` as a known state.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetError::Netns { source, .. }
            | NetError::Netlink { source, .. }
            | NetError::Sysctl { source, .. }
            | NetError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

pub type Result<T, E = NetError> = std::result::Result<T, E>;
