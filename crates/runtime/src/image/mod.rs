//! OCI images: references, pulling over the distribution protocol, a
//! content-addressed store with layers unpacked once for overlayfs, and
//! loading image archives. See `registry.rs` for why the HTTP side is
//! built on `oci-client`.

mod archive;
mod build;
mod diff;
mod digest;
mod error;
mod history;
mod index;
mod manifest;
mod model;
mod progress;
mod push;
mod reference;
mod registry;
mod store;
mod transfers;
mod unpack;

pub use build::{CommitRequest, ConfigPatch};
pub use diff::write_layer;
pub use digest::{Digest, ImageId};
pub use error::ImageError;
pub use history::HistoryEntry;
pub use model::{Image, ImageConfig};
pub use push::Pushed;
pub use progress::{ignore_progress, LayerStatus, ProgressSink, PullProgress};
pub use reference::Reference;
pub use registry::RegistryAuth;
pub use manifest::ImagePlatform;
pub use store::{ImageStore, PinnedImage, Removed};
pub use unpack::{detect_compression, unpack_layer, Compression, LayerSummary, UnpackError};
