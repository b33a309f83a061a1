//! The simulator's findings, as a table for people or JSON for tests and
//! plots.

use std::time::Duration;

use shoal_agent::simulation::PoolStatus;

use super::measure::{Check, Cost};
use super::fanout::FanOut;
use super::steady::SteadyState;
use super::SimArgs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SimFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SimReport {
    pub managers: u32,
    pub nodes: usize,
    pub tasks: usize,
    #[serde(with = "millis")]
    pub join: Duration,
    /// What joining cost the managers per 1,000 nodes.
    pub join_cost: Cost,
    #[serde(with = "millis")]
    pub placement: Duration,
    /// Tasks placed and running per second, end to end.
    pub placements_per_second: f64,
    /// What placing cost the managers per 1,000 tasks.
    pub placement_cost: Cost,
    /// Each manager's resident memory with every task placed.
    pub rss_after_placement: Vec<u64>,
    pub check_placement: Check,
    /// Growth of the managers' resident memory (all together) from joined
    /// to placed, per 100,000 tasks.
    pub rss_per_100k_tasks: i64,
    /// What one task's start on a network spanning the nodes cost to tell them.
    pub fan_out: Option<FanOut>,
    /// The cluster idle with every task running.
    pub steady: Option<SteadyState>,
    pub lost_nodes: usize,
    #[serde(with = "optional_millis")]
    pub reschedule: Option<Duration>,
    pub check_after_loss: Option<Check>,
    /// Kill of the leader to the first write the next one commits.
    #[serde(with = "optional_millis")]
    pub failover_write: Option<Duration>,
    /// Kill of the leader until every live simulated node is ready again.
    #[serde(with = "optional_millis")]
    pub failover_sessions: Option<Duration>,
    pub check_after_failover: Option<Check>,
    /// The simulated nodes' own counts.
    pub pool: PoolStatus,
    /// Resident memory of the simulated nodes' process, per node.
    pub memory_per_node: Option<u64>,
}

impl SimReport {
    pub fn new(args: &SimArgs) -> Self {
        SimReport { managers: args.managers, nodes: args.nodes, tasks: args.nodes * args.tasks_per_node, ..Default::default() }
    }

    /// Every task ran on exactly one node, and the managers agreed, after
    /// placement and after the loss.
    pub fn exactly_once(&self) -> bool {
        self.check_placement.holds()
            && self.check_after_loss.as_ref().is_none_or(Check::holds)
            && self.check_after_failover.as_ref().is_none_or(Check::holds)
    }

    /// Appends the report as one JSON line to `path`.
    pub fn append_to(&self, path: &std::path::Path) -> anyhow::Result<()> {
        use std::io::Write;
        let mut line = serde_json::to_vec(self)?;
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("could not open {} to record the run: {e}", path.display()))?;
        file.write_all(&line).map_err(|e| anyhow::anyhow!("could not record the run in {}: {e}", path.display()))?;
        Ok(())
    }

    pub fn print(&self, format: SimFormat) -> anyhow::Result<()> {
        match format {
            SimFormat::Json => println!("{}", serde_json::to_string_pretty(self)?),
            SimFormat::Table => self.print_table(),
        }
        Ok(())
    }

    fn print_table(&self) {
        let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
        println!("{} managers, {} simulated nodes, {} tasks", self.managers, self.nodes, self.tasks);
        println!("{:<44} {}", "STEP", "RESULT");
        println!("{:<44} {:.2} s", "join: every node ready", self.join.as_secs_f64());
        println!("{:<44} {:.2} CPU s, {:+.1} MiB", "join: managers' cost per 1,000 nodes", self.join_cost.cpu_seconds, mib(self.join_cost.rss_bytes as f64));
        println!("{:<44} {:.2} s ({:.0} placements/s)", "placement: every replica running", self.placement.as_secs_f64(), self.placements_per_second);
        println!(
            "{:<44} {:.1} CPU ms per placement",
            "placement: managers' cost", self.placement_cost.cpu_seconds
        );
        let rss: Vec<String> = self.rss_after_placement.iter().map(|b| format!("{:.0}", mib(*b as f64))).collect();
        println!("{:<44} {} MiB", "managers' RSS with every task placed", rss.join(" / "));
        println!("{:<44} {}", "placement: each task once, views agree", verdict(&self.check_placement));
        println!("{:<44} {:+.1} MiB", "managers' memory per 100,000 tasks", mib(self.rss_per_100k_tasks as f64));
        if let Some(steady) = &self.steady {
            println!("{:<44} {:.0}/s", "steady: heartbeats the leader records", steady.heartbeats_per_second);
            println!("{:<44} {:.1}/s", "steady: Raft writes (store changes)", steady.writes_per_second);
            println!(
                "{:<44} {:.0}% managers, {:.0}% simulated nodes",
                "steady: CPU (100% = one core)", steady.managers_cpu_percent, steady.nodes_cpu_percent
            );
        }
        if let Some(fan_out) = &self.fan_out {
            println!(
                "{:<44} {:.0} messages, {:.0} bytes ({:.0} per message)",
                format!("one task on a network of {} nodes", fan_out.nodes_on_network),
                fan_out.messages,
                fan_out.bytes,
                fan_out.bytes_per_message()
            );
        }
        if let Some(reschedule) = self.reschedule {
            println!("{:<44} {:.2} s", format!("loss of {} nodes: tasks running elsewhere", self.lost_nodes), reschedule.as_secs_f64());
        }
        if let Some(check) = &self.check_after_loss {
            println!("{:<44} {}", "after the loss: each task once, views agree", verdict(check));
        }
        if let Some(write) = self.failover_write {
            println!("{:<44} {:.2} s", "leader killed: first write committed", write.as_secs_f64());
        }
        if let Some(sessions) = self.failover_sessions {
            println!("{:<44} {:.2} s", "leader killed: every node back in session", sessions.as_secs_f64());
        }
        if let Some(check) = &self.check_after_failover {
            println!("{:<44} {}", "after failover: each task once, views agree", verdict(check));
        }
        if let Some(bytes) = self.memory_per_node {
            println!("{:<44} {:.1} KiB", "memory of one simulated node", bytes as f64 / 1024.0);
        }
        println!(
            "{:<44} {} starts, {} failed, {} stops, {} overlay views",
            "simulated nodes saw", self.pool.starts, self.pool.failed_starts, self.pool.stops, self.pool.overlay_views
        );
    }
}

fn verdict(check: &Check) -> String {
    let word = if check.holds() { "yes" } else { "NO" };
    format!(
        "{word} (managers {}, nodes {}, duplicates {}, mismatched {})",
        check.managers_running, check.nodes_running, check.duplicates, check.mismatched
    )
}

mod millis {
    pub fn serialize<S: serde::Serializer>(value: &std::time::Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u128(value.as_millis())
    }
}

mod optional_millis {
    pub fn serialize<S: serde::Serializer>(value: &Option<std::time::Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.serialize_u128(value.as_millis()),
            None => serializer.serialize_none(),
        }
    }
}
