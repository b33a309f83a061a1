//! `service logs`: the merged output of a service's (or one task's)
//! containers, each line prefixed docker's way: `web.1.abc123def456@node1    | `.

use std::io::Write;

use shoal_proto::pb;
use tonic::transport::Channel;

use super::short_id;
use crate::error::{CliError, CliResult};

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Keep streaming new output
    #[arg(short, long)]
    follow: bool,
    /// Number of lines from the end of each container's log ("all" for everything)
    #[arg(short = 'n', long, value_name = "N")]
    tail: Option<String>,
    /// Prefix each line with its time
    #[arg(short, long)]
    timestamps: bool,
    /// Leave task ids out of the prefix
    #[arg(long)]
    no_task_ids: bool,
    /// Do not truncate task ids
    #[arg(long)]
    no_trunc: bool,
    /// Print the lines without any prefix
    #[arg(long)]
    raw: bool,
    /// Service id, id prefix or name, or a task id or name
    service: String,
}

#[derive(Debug, Clone, Copy, Default)]
struct PrefixOptions {
    no_task_ids: bool,
    no_trunc: bool,
}

/// `web.1.abc123def456@node1`: the task's name, its id, and its node.
fn context(task_id: &str, task_name: &str, node_id: &str, hostname: &str, options: PrefixOptions) -> String {
    // The manager names tasks SERVICE.SLOT.TASKID; take the id back off.
    let base = task_name.strip_suffix(task_id).and_then(|b| b.strip_suffix('.')).unwrap_or(task_name);
    let base = if base.is_empty() { task_id } else { base };
    let mut context = base.to_string();
    if !options.no_task_ids && base != task_id {
        context.push('.');
        context.push_str(if options.no_trunc { task_id } else { short_id(task_id) });
    }
    let node = if !hostname.is_empty() {
        hostname
    } else if options.no_trunc {
        node_id
    } else {
        short_id(node_id)
    };
    if !node.is_empty() {
        context.push('@');
        context.push_str(node);
    }
    context
}

/// The bytes to write for one log record: every line in it, prefixed.
fn render(line: &pb::ServiceLogLine, options: PrefixOptions, padding: usize, timestamps: bool, raw: bool) -> Vec<u8> {
    let mut prefix = String::new();
    if let Some(log) = &line.line {
        if timestamps {
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(log.time_unix_nanos.max(0) as u64);
            prefix.push_str(&humantime::format_rfc3339_nanos(time).to_string());
            prefix.push(' ');
        }
    }
    if !raw {
        let context = context(&line.task_id, &line.task_name, &line.node_id, &line.node_hostname, options);
        prefix.push_str(&format!("{context:<padding$}    | "));
    }
    let data = line.line.as_ref().map(|l| l.data.as_slice()).unwrap_or_default();
    let mut out = Vec::with_capacity(data.len() + prefix.len() + 1);
    let mut rest = data;
    while !rest.is_empty() {
        let end = rest.iter().position(|b| *b == b'\n').map_or(rest.len(), |i| i + 1);
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(&rest[..end]);
        if !rest[..end].ends_with(b"\n") {
            out.push(b'\n');
        }
        rest = &rest[end..];
    }
    out
}

pub async fn run(control: &mut pb::control_client::ControlClient<Channel>, args: LogsArgs) -> CliResult {
    let tail = match args.tail.as_deref().map(str::trim) {
        None | Some("all") => None,
        Some(n) => Some(
            n.parse::<u64>()
                .map_err(|_| CliError::msg(format!("--tail {n:?} is invalid; use a number of lines or \"all\"")))?,
        ),
    };
    let options = PrefixOptions { no_task_ids: args.no_task_ids, no_trunc: args.no_trunc };
    // Line prefixes up as docker's do; a task reference is not a service,
    // and then there is nothing to line up with.
    let padding = match control.list_tasks(pb::ListTasksRequest { service: args.service.clone(), ..Default::default() }).await {
        Ok(reply) => reply
            .into_inner()
            .tasks
            .iter()
            .filter(|t| !t.node_id.is_empty())
            .map(|t| {
                let name = format!("{}.{}", t.name, t.id);
                context(&t.id, &name, &t.node_id, &t.node_hostname, options).chars().count()
            })
            .max()
            .unwrap_or(0),
        Err(_) => 0,
    };
    let mut lines = control
        .service_logs(pb::ServiceLogsRequest { service: args.service, follow: args.follow, tail })
        .await?
        .into_inner();
    while let Some(line) = lines.message().await? {
        let bytes = render(&line, options, padding, args.timestamps, args.raw);
        let to_stderr = line.line.as_ref().is_some_and(|l| l.stream == "stderr");
        if to_stderr {
            let mut err = std::io::stderr().lock();
            err.write_all(&bytes)?;
            err.flush()?;
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            out.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "abcdefghijklmnopqrstuvwxy";

    fn line(data: &str) -> pb::ServiceLogLine {
        pb::ServiceLogLine {
            task_id: ID.into(),
            task_name: format!("web.1.{ID}"),
            node_id: "0123456789abcdef".into(),
            node_hostname: "worker1".into(),
            line: Some(pb::LogLine { stream: "stdout".into(), data: data.as_bytes().to_vec(), time_unix_nanos: 1_714_564_800_000_000_001 }),
        }
    }

    #[test]
    fn prefixes_read_like_docker() {
        let o = PrefixOptions::default();
        assert_eq!(context(ID, &format!("web.1.{ID}"), "n", "worker1", o), "web.1.abcdefghijkl@worker1");
        assert_eq!(
            context(ID, &format!("web.1.{ID}"), "n", "worker1", PrefixOptions { no_trunc: true, ..o }),
            format!("web.1.{ID}@worker1")
        );
        assert_eq!(
            context(ID, &format!("web.1.{ID}"), "n", "worker1", PrefixOptions { no_task_ids: true, ..o }),
            "web.1@worker1"
        );
        // A manager that sends the bare task name still gets the id added.
        assert_eq!(context(ID, "web.1", "n", "", o), "web.1.abcdefghijkl@n");
    }

    #[test]
    fn every_line_of_a_record_is_prefixed() {
        let out = render(&line("one\ntwo\n"), PrefixOptions::default(), 30, false, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "web.1.abcdefghijkl@worker1        | one\nweb.1.abcdefghijkl@worker1        | two\n"
        );
        let out = render(&line("partial"), PrefixOptions::default(), 0, true, false);
        assert_eq!(String::from_utf8(out).unwrap(), "2024-05-01T12:00:00.000000001Z web.1.abcdefghijkl@worker1    | partial\n");
        let out = render(&line("x\n"), PrefixOptions::default(), 0, false, true);
        assert_eq!(String::from_utf8(out).unwrap(), "x\n");
    }
}
