//! `shoal image ...`: the node's local image store, as `docker image ...`.

use std::io::IsTerminal;
use std::path::PathBuf;

use serde::Serialize;
use shoal_proto::pb;
use tonic::transport::Channel;

use crate::client::ConnectArgs;
use crate::error::{CliError, CliResult};
use crate::output::{print_json, print_table, Format};

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum ImageCommand {
    /// Pull an image from a registry
    Pull {
        /// Only print the final image digest
        #[arg(short, long)]
        quiet: bool,
        image: String,
    },
    /// List images
    Ls {
        #[arg(short, long)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show images in detail (JSON)
    Inspect {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove images (refused while a container uses one, unless --force)
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Load images from an OCI archive or a `docker save` tar
    Load {
        #[arg(short, long = "input", value_name = "FILE")]
        input: PathBuf,
    },
    /// Make an image from a root filesystem tarball, as `docker import` does
    Import {
        /// A tar of the root filesystem (e.g. `tar -C rootfs -cf rootfs.tar .`)
        file: PathBuf,
        /// The name to give it, e.g. busybox:local
        reference: String,
        /// The image's default command, e.g. --cmd sh --cmd -c --cmd 'echo hi'
        #[arg(long = "cmd", value_name = "ARG")]
        cmd: Vec<String>,
    },
    /// Show the steps an image was built by, newest first
    History {
        /// Do not shorten ids and commands
        #[arg(long)]
        no_trunc: bool,
        /// Print only the ids
        #[arg(short, long)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        image: String,
    },
    /// Push an image to its registry (logins from `shoal login` apply)
    Push {
        /// Print only the digest
        #[arg(short, long)]
        quiet: bool,
        image: String,
    },
    /// Give an image another name: SOURCE (name or id) as TARGET (NAME[:TAG])
    Tag { source: String, target: String },
    /// Remove images no tag or container refers to, and unused layers
    Prune {
        /// Every image no container uses, not only those without a name
        #[arg(short, long)]
        all: bool,
        /// Accepted for docker compatibility; prune never asks
        #[arg(short, long)]
        force: bool,
    },
}

pub async fn run(command: ImageCommand, connect: &ConnectArgs) -> CliResult {
    let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
    match command {
        ImageCommand::Pull { quiet, image } => {
            let digest = pull(&mut runtime, &image, !quiet).await?;
            if quiet {
                println!("{digest}");
            }
        }
        ImageCommand::Ls { quiet, format } => {
            let images = runtime.list_images(pb::Empty {}).await?.into_inner().images;
            list(images, quiet, format)?;
        }
        ImageCommand::Inspect { images } => {
            let mut docs = Vec::new();
            for name in images {
                let doc = runtime.inspect_image(pb::ImageRef { name }).await?.into_inner();
                docs.push(serde_json::from_str::<serde_json::Value>(&doc.json)?);
            }
            print_json(&docs)?;
        }
        ImageCommand::Rm { force, images } => {
            for name in images {
                let removed = runtime.remove_image(pb::RemoveImageRequest { name, force }).await?.into_inner();
                for r in removed.untagged {
                    println!("Untagged: {r}");
                }
                for d in removed.deleted {
                    println!("Deleted: {d}");
                }
            }
        }
        ImageCommand::Load { input } => {
            // The daemon is local and shares our filesystem view; it reads the file itself.
            let path = std::fs::canonicalize(&input)
                .map_err(|e| CliError::msg(format!("cannot read {}: {e}", input.display())))?;
            let loaded = runtime
                .load_image(pb::LoadImageRequest { path: path.to_string_lossy().into_owned() })
                .await?
                .into_inner();
            for name in loaded.loaded {
                println!("Loaded image: {name}");
            }
        }
        ImageCommand::Import { file, reference, cmd } => {
            let path = std::fs::canonicalize(&file)
                .map_err(|e| CliError::msg(format!("cannot read {}: {e}; give the path of a root filesystem tarball", file.display())))?;
            let image = runtime
                .import_image(pb::ImportImageRequest { path: path.to_string_lossy().into_owned(), reference, cmd })
                .await?
                .into_inner();
            println!("{}", image.name);
        }
        ImageCommand::History { no_trunc, quiet, format, image } => {
            let doc = runtime.image_history(pb::ImageRef { name: image }).await?.into_inner();
            let steps: Vec<serde_json::Value> = serde_json::from_str(&doc.json)?;
            history(steps, no_trunc, quiet, format)?;
        }
        ImageCommand::Push { quiet, image } => push(&mut runtime, &image, quiet).await?,
        ImageCommand::Tag { source, target } => {
            runtime.tag_image(pb::TagImageRequest { source, target }).await?;
        }
        ImageCommand::Prune { all, force: _ } => {
            let pruned = runtime.prune_images(pb::PruneImagesRequest { all }).await?.into_inner();
            for d in &pruned.deleted {
                println!("Deleted: {d}");
            }
            println!("Total reclaimed space: {}", human_size(pruned.reclaimed_bytes));
        }
    }
    Ok(())
}

/// `image history`'s table (or JSON), as docker prints it.
fn history(steps: Vec<serde_json::Value>, no_trunc: bool, quiet: bool, format: Format) -> CliResult {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let id = |step: &serde_json::Value| {
        let id = text(&step["id"]);
        if no_trunc || id == "<missing>" { id } else { short_id(&id) }
    };
    if quiet {
        steps.iter().for_each(|step| println!("{}", id(step)));
        return Ok(());
    }
    if format == Format::Json {
        return print_json(&steps);
    }
    let rows = steps
        .iter()
        .map(|step| {
            let mut created_by = text(&step["created_by"]);
            if !no_trunc && created_by.chars().count() > 45 {
                created_by = format!("{}…", created_by.chars().take(44).collect::<String>());
            }
            let created = step["created"].as_str().map(crate::output::ago_rfc3339).unwrap_or_else(|| "N/A".into());
            vec![id(step), created, created_by, human_size(step["size"].as_u64().unwrap_or(0)), text(&step["comment"])]
        })
        .collect();
    print_table(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], rows);
    Ok(())
}

/// Pushes `image`, printing each layer's fate and then the digest as
/// docker does (`TAG: digest: sha256:... size: N`).
async fn push(runtime: &mut pb::runtime_client::RuntimeClient<Channel>, image: &str, quiet: bool) -> CliResult {
    let request = pb::PushImageRequest { reference: image.to_string(), credentials: crate::credentials::for_image(image) };
    let mut events = runtime.push_image(request).await?.into_inner();
    while let Some(event) = events.message().await? {
        match event.event {
            Some(pb::push_event::Event::Layer(layer)) if !quiet => {
                println!("{}: {}", layer.layer, if layer.already_existed { "Layer already exists" } else { "Pushed" });
            }
            Some(pb::push_event::Event::Done(done)) => {
                if quiet {
                    println!("{}", done.digest);
                } else {
                    println!("{}: digest: {} size: {}", done.tag, done.digest, done.size);
                }
                return Ok(());
            }
            _ => {}
        }
    }
    Err(CliError::msg(format!("the daemon ended the push of {image} without a result; see its log")))
}

/// Pulls with per-layer progress bars on a terminal (plain lines otherwise)
/// and returns the image's repo digest.
pub async fn pull(runtime: &mut pb::runtime_client::RuntimeClient<Channel>, image: &str, show_progress: bool) -> CliResult<String> {
    let request = pb::PullImageRequest { reference: image.to_string(), credentials: crate::credentials::for_image(image) };
    let mut events = runtime.pull_image(request).await?.into_inner();
    let mut progress = show_progress.then(|| PullProgress::new(std::io::stderr().is_terminal()));
    loop {
        let event = match events.message().await {
            Ok(Some(event)) => event,
            Ok(None) => return Err(CliError::msg(format!("the daemon ended the pull of {image} without a result; see its log"))),
            Err(status) => {
                if let Some(p) = progress.as_mut() {
                    p.abandon();
                }
                return Err(status.into());
            }
        };
        if event.layer.is_empty() && !event.image_id.is_empty() {
            if let Some(p) = progress.as_mut() {
                p.finish(&event.digest, image);
            }
            return Ok(event.digest);
        }
        if let Some(p) = progress.as_mut() {
            p.update(&event);
        }
    }
}

/// One bar per layer on a TTY, like `docker pull`; one line per state
/// change otherwise so logs stay readable.
struct PullProgress {
    bars: Option<indicatif::MultiProgress>,
    layers: std::collections::HashMap<String, (indicatif::ProgressBar, String)>,
}

impl PullProgress {
    fn new(tty: bool) -> Self {
        PullProgress { bars: tty.then(indicatif::MultiProgress::new), layers: Default::default() }
    }

    fn update(&mut self, event: &pb::PullEvent) {
        let Some(bars) = &self.bars else {
            let last = self.layers.get(&event.layer).map(|(_, s)| s.as_str());
            if last != Some(event.status.as_str()) {
                eprintln!("{}: {}", event.layer, event.status);
                self.layers.insert(event.layer.clone(), (indicatif::ProgressBar::hidden(), event.status.clone()));
            }
            return;
        };
        let (bar, status) = self.layers.entry(event.layer.clone()).or_insert_with(|| {
            let bar = bars.add(indicatif::ProgressBar::new(0));
            bar.set_style(
                indicatif::ProgressStyle::with_template("{prefix}: {msg:<12} {bar:30} {bytes}/{total_bytes}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_prefix(event.layer.clone());
            (bar, String::new())
        });
        if event.total > 0 {
            bar.set_length(event.total);
            bar.set_position(event.current);
        }
        if *status != event.status {
            bar.set_message(event.status.clone());
            *status = event.status.clone();
        }
    }

    fn abandon(&mut self) {
        for (bar, _) in self.layers.values() {
            bar.abandon();
        }
    }

    fn finish(&mut self, digest: &str, image: &str) {
        for (bar, _) in self.layers.values() {
            bar.finish();
        }
        eprintln!("Digest: {digest}");
        eprintln!("Status: downloaded {image}");
    }
}

#[derive(Serialize)]
struct ImageJson<'a> {
    id: &'a str,
    references: &'a [String],
    digest: &'a str,
    size: u64,
    created: String,
}

fn list(images: Vec<pb::ImageSummary>, quiet: bool, format: Format) -> CliResult {
    if quiet {
        for image in &images {
            println!("{}", short_id(&image.id));
        }
        return Ok(());
    }
    match format {
        Format::Json => print_json(
            &images
                .iter()
                .map(|i| ImageJson {
                    id: &i.id,
                    references: &i.references,
                    digest: &i.digest,
                    size: i.size,
                    created: crate::output::ago(i.created_unix),
                })
                .collect::<Vec<_>>(),
        ),
        Format::Table => {
            let mut rows = Vec::new();
            for image in &images {
                let created = crate::output::ago(image.created_unix);
                let size = human_size(image.size);
                if image.references.is_empty() {
                    rows.push(vec!["<none>".into(), "<none>".into(), short_id(&image.id), created, size]);
                    continue;
                }
                for reference in &image.references {
                    let (repo, tag) = split_tag(reference);
                    rows.push(vec![repo.to_string(), tag.to_string(), short_id(&image.id), created.clone(), size.clone()]);
                }
            }
            print_table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows);
            Ok(())
        }
    }
}

/// `host:5000/busybox:1` → (`host:5000/busybox`, `1`); the port's colon is not a tag.
fn split_tag(reference: &str) -> (&str, &str) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, "<none>"),
    }
}

pub fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.3}{}", UNITS[unit]).replace(".000", "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_after_the_port() {
        assert_eq!(split_tag("127.0.0.1:5000/busybox:1"), ("127.0.0.1:5000/busybox", "1"));
        assert_eq!(split_tag("127.0.0.1:5000/busybox"), ("127.0.0.1:5000/busybox", "<none>"));
    }

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1_234_000), "1.234MB");
    }
}
