//! `image history`: the steps an image was built by, from its
//! configuration's `history`, each with the size of the layer it made.

use serde::Serialize;

use super::error::{ImageError, Result};
use super::index::layer_rel_path;
use super::store::{disk_usage, ImageStore};

/// One build step, as `docker image history` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The image's id on the newest step, `<missing>` below it (docker's
    /// word: those steps have no image of their own here).
    pub id: String,
    /// RFC 3339, when the configuration says.
    pub created: Option<String>,
    pub created_by: String,
    /// Bytes of the layer the step made (0 for steps that made none).
    pub size: u64,
    pub comment: String,
}

impl ImageStore {
    /// The steps of the image `name`, newest first.
    pub async fn history(&self, name: &str) -> Result<Vec<HistoryEntry>> {
        let (record, _) = self.record_of(name).await?;
        let config: serde_json::Value = serde_json::from_slice(&self.read_blob(record.id.digest()).await?)
            .map_err(|e| ImageError::io("cannot read the image's configuration", std::io::Error::other(e)))?;
        let sizes: Vec<u64> = record.diff_ids.iter().map(|diff_id| disk_usage(&self.root().join(layer_rel_path(diff_id)))).collect();
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let recorded: Vec<&serde_json::Value> = config["history"].as_array().into_iter().flatten().collect();
        let with_layers = recorded.iter().filter(|step| !step["empty_layer"].as_bool().unwrap_or(false)).count();
        // Layers the history does not account for are the lowest: a base
        // built without history, with steps recorded over it (a commit).
        let unaccounted = sizes.len().saturating_sub(with_layers);
        let mut steps: Vec<HistoryEntry> = sizes[..unaccounted]
            .iter()
            .map(|&size| HistoryEntry { id: "<missing>".into(), created: None, created_by: String::new(), size, comment: String::new() })
            .collect();
        let mut layer_sizes = sizes[unaccounted..].iter().copied();
        for step in recorded {
            let empty = step["empty_layer"].as_bool().unwrap_or(false);
            steps.push(HistoryEntry {
                id: "<missing>".into(),
                created: step["created"].as_str().map(String::from),
                created_by: text(&step["created_by"]),
                size: if empty { 0 } else { layer_sizes.next().unwrap_or(0) },
                comment: text(&step["comment"]),
            });
        }
        steps.reverse();
        if let Some(newest) = steps.first_mut() {
            newest.id = record.id.to_string();
        }
        Ok(steps)
    }
}
