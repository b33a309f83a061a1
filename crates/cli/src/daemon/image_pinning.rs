//! The manager's image pinning, done by this node's image store (which
//! knows the insecure registries the daemon was started with).

use shoal_manager::image_pinning::{ImagePinner, PinFuture, PinnedImage};
use shoal_manager::store::{Platform, RegistryLogin};
use shoal_runtime::image::{ImageStore, Reference, RegistryAuth};

pub struct StorePinner {
    pub images: ImageStore,
}

impl ImagePinner for StorePinner {
    fn pin<'a>(&'a self, reference: &'a str, login: Option<&'a RegistryLogin>) -> PinFuture<'a> {
        Box::pin(async move {
            let parsed = Reference::parse(reference).map_err(|e| e.to_string())?;
            let auth = match login {
                Some(login) => RegistryAuth::Basic { username: login.username.clone(), password: login.password.clone() },
                None => RegistryAuth::default(),
            };
            let pinned = self.images.pin_reference(&parsed, &auth).await.map_err(|e| e.to_string())?;
            let platforms = pinned
                .platforms
                .into_iter()
                .map(|p| Platform { os: p.os, architecture: p.architecture })
                .collect();
            Ok(PinnedImage { reference: pinned.reference, platforms })
        })
    }
}
