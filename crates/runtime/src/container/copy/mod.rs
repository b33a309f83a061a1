//! `container cp`: files in and out of a container as tar streams.
//!
//! - [`rules`]: docker's rules for where a copy lands (pure; both sides).
//! - [`archive`]: packing and unpacking those streams safely (both sides).
//! - [`jail`]: the process, forked by the launcher, that packs or unpacks
//!   chrooted in the container's root, so no link leads out of it.
//! - [`session`]: the daemon's side, starting a jail and handing back its
//!   data pipe and a way to learn how it ended.

pub mod archive;
pub mod jail;
pub mod rules;
mod session;

pub use rules::{CopySource, Destination, Placement, PlacementError, SourceKind, Top};
pub use session::{CopyDone, CopyIn, CopyOut};
