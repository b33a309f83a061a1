//! Conversions between wire messages and the libraries' own types that
//! both the daemon and the commands need, so each has one definition.

use shoal_proto::pb;
use shoal_runtime::container::copy::{CopySource, SourceKind};

pub fn copy_source_to_wire(source: &CopySource) -> pb::CopySource {
    let kind = match source.kind {
        SourceKind::File => pb::CopySourceKind::File,
        SourceKind::Directory => pb::CopySourceKind::Directory,
        SourceKind::Symlink => pb::CopySourceKind::Symlink,
    };
    pb::CopySource { kind: kind as i32, name: source.name.clone(), contents_only: source.contents_only }
}

/// None for a kind this side does not know (a newer peer's).
pub fn copy_source_from_wire(source: &pb::CopySource) -> Option<CopySource> {
    let kind = match pb::CopySourceKind::try_from(source.kind).ok()? {
        pb::CopySourceKind::File => SourceKind::File,
        pb::CopySourceKind::Directory => SourceKind::Directory,
        pb::CopySourceKind::Symlink => SourceKind::Symlink,
        pb::CopySourceKind::Unspecified => return None,
    };
    Some(CopySource { kind, name: source.name.clone(), contents_only: source.contents_only })
}

/// Credentials from `login` as the image store takes them; none: anonymous.
pub fn registry_auth_from_wire(credentials: Option<&pb::RegistryCredentials>) -> shoal_runtime::image::RegistryAuth {
    match credentials {
        Some(c) if !c.username.is_empty() => {
            shoal_runtime::image::RegistryAuth::Basic { username: c.username.clone(), password: c.password.clone() }
        }
        _ => shoal_runtime::image::RegistryAuth::Anonymous,
    }
}
