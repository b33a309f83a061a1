//! `shoal commit` / `shoal container commit`: a new image from a
//! container's changes, as `docker commit` makes it.

use shoal_proto::pb;

use crate::client::ConnectArgs;
use crate::error::CliResult;

#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    /// Author (e.g. "Jane Doe <jane@example.com>")
    #[arg(short, long)]
    author: Option<String>,
    /// Commit message
    #[arg(short, long)]
    message: Option<String>,
    /// Apply a Dockerfile instruction (CMD, ENTRYPOINT, ENV, LABEL, WORKDIR, USER, EXPOSE)
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    changes: Vec<String>,
    /// Freeze a running container while committing
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set)]
    pause: bool,
    container: String,
    /// REPOSITORY[:TAG] to name the image
    reference: Option<String>,
}

pub async fn run(args: CommitArgs, connect: &ConnectArgs) -> CliResult {
    let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
    let request = pb::CommitContainerRequest {
        container: args.container,
        reference: args.reference.unwrap_or_default(),
        author: args.author.unwrap_or_default(),
        message: args.message.unwrap_or_default(),
        changes: args.changes,
        no_pause: !args.pause,
    };
    let image = runtime.commit_container(request).await?.into_inner();
    println!("{}", image.name);
    Ok(())
}
