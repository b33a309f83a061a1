//! Where the node's disk went (`shoal system df`): images, containers'
//! writable layers, volumes and containers' logs, each with how much is in
//! use and how much a prune would give back, measured on disk.

use std::collections::HashSet;
use std::path::Path;

use crate::container::{logs, ContainerManager};
use crate::image::ImageStore;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Item {
    pub name: String,
    pub size: u64,
    /// Used: an image a container was made from, a running container (and
    /// its log), a volume a container mounts.
    pub active: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Category {
    pub items: Vec<Item>,
}

impl Category {
    pub fn total(&self) -> usize {
        self.items.len()
    }
    pub fn active(&self) -> usize {
        self.items.iter().filter(|i| i.active).count()
    }
    pub fn size(&self) -> u64 {
        self.items.iter().map(|i| i.size).sum()
    }
    /// What removing the unused ones frees.
    pub fn reclaimable(&self) -> u64 {
        self.items.iter().filter(|i| !i.active).map(|i| i.size).sum()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiskUsage {
    pub images: Category,
    pub containers: Category,
    pub volumes: Category,
    pub logs: Category,
}

/// Bytes of the files under `dir` (links not followed; missing: 0).
pub fn directory_size(dir: &Path) -> u64 {
    // Links are not followed: a link's target is not this tree's to count.
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Measures the node now; the walk runs on a blocking thread.
pub async fn measure(images: &ImageStore, containers: &ContainerManager) -> DiskUsage {
    let in_use: HashSet<String> = containers.images_in_use();
    let image_items: Vec<Item> = images
        .list()
        .await
        .into_iter()
        .map(|image| Item {
            // As people wrote it (`busybox:1`, not docker.io/library/busybox:1).
            name: image
                .repo_tags
                .first()
                .map(|tag| crate::image::Reference::parse(tag).map(|r| r.familiar()).unwrap_or_else(|_| tag.clone()))
                .unwrap_or_else(|| image.id.to_string()),
            size: image.size,
            active: in_use.contains(&image.id.to_string()),
        })
        .collect();
    let directories = containers.directories();
    let volumes = containers.volumes().list();
    let users = containers.volume_users();
    let measured = tokio::task::spawn_blocking(move || {
        let mut usage = DiskUsage::default();
        for (name, running, dir) in directories {
            usage.containers.items.push(Item { name: name.clone(), size: directory_size(&dir.join("upper")), active: running });
            let log_size = std::fs::read_dir(&dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .filter(|e| e.file_name().to_string_lossy().starts_with(logs::LOG_FILE))
                        .map(|e| e.metadata().map_or(0, |m| m.len()))
                        .sum()
                })
                .unwrap_or(0);
            // A container's log goes when the container is removed.
            usage.logs.items.push(Item { name, size: log_size, active: running });
        }
        for volume in volumes {
            let active = users.get(&volume.name).is_some_and(|u| !u.is_empty());
            usage.volumes.items.push(Item { size: directory_size(&volume.mountpoint), name: volume.name, active });
        }
        usage
    })
    .await
    .unwrap_or_default();
    DiskUsage { images: Category { items: image_items }, ..measured }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_sizes_count_files_not_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/one"), vec![0u8; 100]).unwrap();
        std::fs::write(dir.path().join("a/b/two"), vec![0u8; 50]).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("a/link")).unwrap();
        assert_eq!(directory_size(dir.path()), 150);
        assert_eq!(directory_size(&dir.path().join("missing")), 0);
        let category = Category {
            items: vec![Item { name: "x".into(), size: 10, active: true }, Item { name: "y".into(), size: 5, active: false }],
        };
        assert_eq!((category.total(), category.active(), category.size(), category.reclaimable()), (2, 1, 15, 5));
    }
}
