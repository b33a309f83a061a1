//! Waiting for a service to converge after `create`, `update` or `scale`,
//! as docker does unless `--detach`: poll the tasks, show per-replica
//! progress on a terminal, stop at the first persistent failure.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use shoal_proto::pb;
use tonic::transport::Channel;

use super::{parse_time, short_id};
use crate::error::{CliError, CliResult};

const POLL: Duration = Duration::from_millis(200);
/// Converged must hold this long: a container that dies at once is caught.
const VERIFY: Duration = Duration::from_secs(1);
/// A global service with no tasks at all waits longer before calling that
/// converged: the orchestrator may not have made them yet.
const VERIFY_EMPTY: Duration = Duration::from_secs(2);
/// A slot that failed this often is not going to get better by waiting.
const MAX_FAILURES: usize = 3;
/// A failure seen on this many polls in a row ends the wait.
const FAILURE_POLLS: u32 = 2;
/// How long to ride out an unreachable manager (a leader election).
const OUTAGE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Replicated(u64),
    Global,
}

impl Mode {
    pub fn of(spec: &pb::ServiceSpec) -> Self {
        if spec.mode == "global" {
            Mode::Global
        } else {
            Mode::Replicated(spec.replicas)
        }
    }
}

/// What the wait is for.
#[derive(Debug, Clone)]
pub struct Target {
    pub service_id: String,
    pub service_name: String,
    pub mode: Mode,
    /// Only tasks created at or after this count towards failures (the
    /// service's update time; `None`: every task).
    pub since: Option<SystemTime>,
    /// The update replaces every task: tasks older than `since` that are
    /// still wanted mean the rollout is not done.
    pub replaced: bool,
    /// The change started a rollout (an update or a rollback): its status
    /// in the store, not the tasks, says when the wait is over.
    pub rollout: Option<Rollout>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollout {
    Update,
    /// Asked for by the user: a completed rollback is success.
    Rollback,
}

/// How a rollout ended, from the service's update status; `None` while it
/// goes on.
pub fn rollout_outcome(status: Option<&pb::UpdateStatus>, rollout: Rollout, service: &str) -> Option<CliResult> {
    let status = status?;
    let state = pb::UpdateState::try_from(status.state).unwrap_or(pb::UpdateState::Unspecified);
    let advice = format!("see `shoal service ps {service}`, then update the service again or roll it back with `shoal service rollback {service}`");
    match (state, rollout) {
        (pb::UpdateState::Completed, Rollout::Update) | (pb::UpdateState::RollbackCompleted, Rollout::Rollback) => Some(Ok(())),
        (pb::UpdateState::RollbackCompleted, Rollout::Update) => {
            Some(Err(CliError::msg(format!("{}; the service runs its previous spec again", status.message))))
        }
        (pb::UpdateState::Paused | pb::UpdateState::RollbackPaused, _) => Some(Err(CliError::msg(format!("{}; {advice}", status.message)))),
        // A later update took over: this one is over.
        (pb::UpdateState::Completed, Rollout::Rollback) => Some(Ok(())),
        _ => None,
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct Assessment {
    pub running: u64,
    pub desired: u64,
    /// One line per slot (or node): label and status.
    pub lines: Vec<(String, String)>,
    pub converged: bool,
    pub failure: Option<String>,
}

fn status_text(task: &pb::Task) -> String {
    if task.error.is_empty() || task.state == "running" {
        task.state.clone()
    } else {
        format!("{} ({})", task.state, task.error)
    }
}

fn ended_badly(task: &pb::Task) -> bool {
    task.state == "failed" || task.state == "rejected"
}

/// Where the service stands, from its tasks.
pub fn assess(tasks: &[pb::Task], target: &Target) -> Assessment {
    let created = |t: &pb::Task| parse_time(&t.created_at);
    let fresh = |t: &pb::Task| match (target.since, created(t)) {
        (Some(since), Some(at)) => at >= since,
        _ => true,
    };
    let wanted = |t: &pb::Task| t.desired_state == "running";
    let stale_wanted = target.replaced && tasks.iter().any(|t| wanted(t) && !fresh(t));
    let counted: Vec<&pb::Task> = tasks.iter().filter(|t| wanted(t) && (fresh(t) || !target.replaced)).collect();

    // Slot (or node) -> its fresh tasks, newest first.
    let group_of = |t: &pb::Task| match target.mode {
        Mode::Replicated(_) => format!("{:020}", t.slot),
        Mode::Global => t.node_id.clone(),
    };
    let mut groups: BTreeMap<String, Vec<&pb::Task>> = BTreeMap::new();
    for task in tasks.iter().filter(|t| fresh(t)) {
        groups.entry(group_of(task)).or_default().push(task);
    }
    for group in groups.values_mut() {
        group.sort_by_key(|t| std::cmp::Reverse(created(t)));
    }

    let mut assessment = Assessment::default();
    let relevant: Vec<String> = match target.mode {
        Mode::Replicated(n) => {
            assessment.desired = n;
            let width = n.to_string().len();
            for slot in 1..=n {
                let mine: Vec<&&pb::Task> = counted.iter().filter(|t| t.slot == slot).collect();
                let status = match mine.first() {
                    Some(t) => {
                        if t.state == "running" && mine.len() == 1 {
                            assessment.running += 1;
                        }
                        status_text(t)
                    }
                    None => groups.get(&format!("{slot:020}")).and_then(|g| g.first()).map_or("new".into(), |t| status_text(t)),
                };
                assessment.lines.push((format!("{slot:>width$}/{n}"), status));
            }
            let in_slots = counted.iter().filter(|t| (1..=n).contains(&t.slot)).count() as u64;
            let extra = counted.len() as u64 - in_slots;
            assessment.converged = assessment.running == n && in_slots == n && extra == 0 && !stale_wanted;
            (1..=n).map(|slot| format!("{slot:020}")).collect()
        }
        Mode::Global => {
            let mut by_node: BTreeMap<&str, Vec<&pb::Task>> = BTreeMap::new();
            for task in &counted {
                by_node.entry(task.node_id.as_str()).or_default().push(*task);
            }
            assessment.desired = by_node.len() as u64;
            for (node, mine) in &by_node {
                let task = mine[0];
                if task.state == "running" && mine.len() == 1 {
                    assessment.running += 1;
                }
                let label = if task.node_hostname.is_empty() { short_id(node).to_string() } else { task.node_hostname.clone() };
                assessment.lines.push((label, status_text(task)));
            }
            assessment.converged = assessment.running == assessment.desired && !stale_wanted;
            groups.keys().cloned().collect()
        }
    };

    for key in relevant {
        let Some(group) = groups.get(&key) else { continue };
        let Some(newest) = group.first() else { continue };
        if newest.state == "running" {
            // Whatever went wrong before, this slot is up now.
            continue;
        }
        let failures = group.iter().filter(|t| ended_badly(t)).count();
        let name = &newest.name;
        let service = &target.service_name;
        let last_error = group.iter().find(|t| ended_badly(t)).map(|t| t.error.as_str()).unwrap_or_default();
        if failures >= MAX_FAILURES {
            let verb = if group.iter().find(|t| ended_badly(t)).is_some_and(|t| t.state == "rejected") {
                "was rejected"
            } else {
                "failed"
            };
            assessment.failure = Some(format!(
                "task {name} {verb} {failures} times, last with {last_error:?}; see `shoal service ps {service}` and fix the service with `shoal service update`"
            ));
            break;
        }
        // Nothing wanted in a slot that had tasks, and the last one ended
        // on its own: the restart policy will not bring it back.
        let gave_up = !group.iter().any(|t| wanted(t)) && (ended_badly(newest) || newest.state == "complete");
        if gave_up {
            let how = if newest.error.is_empty() { newest.state.clone() } else { format!("{}: {}", newest.state, newest.error) };
            assessment.failure = Some(format!(
                "task {name} ended ({how}) and its restart policy does not start it again; see `shoal service ps {service}`"
            ));
            break;
        }
    }
    assessment
}

/// Polls until the service converges (`Ok`), fails persistently, or the
/// manager stays unreachable.
pub async fn wait(control: &mut pb::control_client::ControlClient<Channel>, target: &Target, show: bool) -> CliResult {
    let mut progress = show.then(Progress::new);
    let mut converged_at: Option<Instant> = None;
    let mut failing_polls = 0;
    let mut unreachable_since: Option<Instant> = None;
    loop {
        let request = pb::ListTasksRequest { service: target.service_id.clone(), ..Default::default() };
        let tasks = match control.list_tasks(request).await {
            Ok(reply) => {
                unreachable_since = None;
                reply.into_inner().tasks
            }
            Err(status) if transient(&status) && unreachable_since.is_none_or(|at| at.elapsed() < OUTAGE) => {
                unreachable_since.get_or_insert_with(Instant::now);
                tokio::time::sleep(POLL).await;
                continue;
            }
            Err(status) => {
                if let Some(p) = progress.take() {
                    p.finish();
                }
                return Err(status.into());
            }
        };
        let assessment = assess(&tasks, target);
        if let Some(rollout) = target.rollout {
            let service = control.inspect_service(pb::ServiceRef { service: target.service_id.clone() }).await;
            let status = service.ok().and_then(|s| s.into_inner().update_status);
            if let Some(p) = progress.as_mut() {
                p.show(&assessment, None);
                if let Some(status) = &status {
                    p.show_rollout(status);
                }
            }
            if let Some(outcome) = rollout_outcome(status.as_ref(), rollout, &target.service_name) {
                if let Some(p) = progress.take() {
                    p.finish();
                }
                return outcome;
            }
            tokio::time::sleep(POLL).await;
            continue;
        }
        if let Some(failure) = &assessment.failure {
            failing_polls += 1;
            if failing_polls >= FAILURE_POLLS {
                if let Some(mut p) = progress.take() {
                    p.show(&assessment, None);
                    p.finish();
                }
                return Err(CliError::msg(failure.clone()));
            }
        } else {
            failing_polls = 0;
        }
        let verify = if assessment.desired == 0 { VERIFY_EMPTY } else { VERIFY };
        if assessment.converged {
            let since = *converged_at.get_or_insert_with(Instant::now);
            if since.elapsed() >= verify {
                if let Some(mut p) = progress.take() {
                    p.show(&assessment, Some(Verify::Done));
                    p.finish();
                }
                return Ok(());
            }
            if let Some(p) = progress.as_mut() {
                p.show(&assessment, Some(Verify::Waiting(verify)));
            }
        } else {
            if let Some(p) = progress.as_mut() {
                p.show(&assessment, converged_at.map(|_| Verify::Lost));
            }
            converged_at = None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Errors worth retrying while waiting: an election, a lost connection.
fn transient(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
    ) || status.message().contains("not the leader")
}

enum Verify {
    Waiting(Duration),
    Lost,
    Done,
}

/// docker's display: "overall progress: 2 out of 3 tasks", a line per
/// slot, then "verify: Service converged".
struct Progress {
    multi: indicatif::MultiProgress,
    overall: indicatif::ProgressBar,
    lines: Vec<(String, indicatif::ProgressBar)>,
    verify: Option<indicatif::ProgressBar>,
}

fn text_bar(multi: &indicatif::MultiProgress) -> indicatif::ProgressBar {
    let bar = multi.add(indicatif::ProgressBar::new_spinner());
    bar.set_style(indicatif::ProgressStyle::with_template("{msg}").unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()));
    bar
}

impl Progress {
    fn new() -> Self {
        let multi = indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stdout());
        let overall = text_bar(&multi);
        Progress { multi, overall, lines: Vec::new(), verify: None }
    }

    fn show(&mut self, assessment: &Assessment, verify: Option<Verify>) {
        self.overall.set_message(format!("overall progress: {} out of {} tasks", assessment.running, assessment.desired));
        for (label, status) in &assessment.lines {
            let bar = match self.lines.iter().find(|(l, _)| l == label) {
                Some((_, bar)) => bar.clone(),
                None => {
                    let bar = match &self.verify {
                        Some(v) => {
                            let bar = self.multi.insert_before(v, indicatif::ProgressBar::new_spinner());
                            bar.set_style(
                                indicatif::ProgressStyle::with_template("{msg}")
                                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                            );
                            bar
                        }
                        None => text_bar(&self.multi),
                    };
                    self.lines.push((label.clone(), bar.clone()));
                    bar
                }
            };
            bar.set_message(format!("{label}: {status}"));
        }
        let message = match verify {
            None => return,
            Some(Verify::Waiting(d)) => {
                let secs = d.as_secs();
                format!("verify: Waiting {secs} second{} to verify that tasks are stable...", if secs == 1 { "" } else { "s" })
            }
            Some(Verify::Lost) => "verify: Detected task failure".to_string(),
            Some(Verify::Done) => "verify: Service converged".to_string(),
        };
        let bar = self.verify.get_or_insert_with(|| text_bar(&self.multi));
        bar.set_message(message);
    }

    /// The rollout's state under the slots: "update: updating", "rollback: ...".
    fn show_rollout(&mut self, status: &pb::UpdateStatus) {
        let state = pb::UpdateState::try_from(status.state).map_or("unknown", |s| s.as_str_name());
        let state = state.trim_start_matches("UPDATE_STATE_").to_lowercase();
        let what = if state.starts_with("rollback") { "rollback" } else { "update" };
        let bar = self.verify.get_or_insert_with(|| text_bar(&self.multi));
        bar.set_message(format!("{what}: {state}{}", if status.message.is_empty() { String::new() } else { format!(" ({})", status.message) }));
    }

    fn bars(&self) -> impl Iterator<Item = &indicatif::ProgressBar> {
        std::iter::once(&self.overall).chain(self.lines.iter().map(|(_, b)| b)).chain(self.verify.iter())
    }

    /// Leaves the last state on the terminal as plain lines (indicatif
    /// would leave the cursor at the end of the last one).
    fn finish(self) {
        let text: Vec<String> = self.bars().map(|b| b.message().to_string()).collect();
        for bar in self.bars() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
        for line in text {
            println!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, slot: u64, node: &str, desired: &str, state: &str, created: &str) -> pb::Task {
        pb::Task {
            id: id.into(),
            name: if slot > 0 { format!("web.{slot}") } else { format!("web.{node}") },
            service_name: "web".into(),
            slot,
            node_id: node.into(),
            node_hostname: format!("host-{node}"),
            desired_state: desired.into(),
            state: state.into(),
            created_at: created.into(),
            ..Default::default()
        }
    }

    fn target(mode: Mode) -> Target {
        Target { service_id: "s".into(), service_name: "web".into(), mode, since: None, replaced: false, rollout: None }
    }

    const T0: &str = "2024-05-01T12:00:00Z";
    const T1: &str = "2024-05-01T12:00:01Z";
    const T2: &str = "2024-05-01T12:00:02Z";
    const T3: &str = "2024-05-01T12:00:03Z";

    #[test]
    fn replicated_converges_when_every_slot_runs() {
        let mut tasks = vec![
            task("a", 1, "n1", "running", "running", T0),
            task("b", 2, "n2", "running", "starting", T0),
            task("c", 3, "", "running", "pending", T0),
        ];
        tasks[2].error = "no suitable node".into();
        let a = assess(&tasks, &target(Mode::Replicated(3)));
        assert_eq!((a.running, a.desired, a.converged, a.failure.as_deref()), (1, 3, false, None));
        assert_eq!(
            a.lines,
            [
                ("1/3".to_string(), "running".to_string()),
                ("2/3".to_string(), "starting".to_string()),
                ("3/3".to_string(), "pending (no suitable node)".to_string())
            ]
        );
        tasks[1].state = "running".into();
        tasks[2].state = "running".into();
        tasks[2].error.clear();
        let a = assess(&tasks, &target(Mode::Replicated(3)));
        assert!(a.converged && a.running == 3);
        // Scaling down: a task above the slot count is still wanted.
        let a = assess(&tasks, &target(Mode::Replicated(2)));
        assert!(!a.converged);
        // Zero replicas with nothing wanted is converged.
        let none = assess(&[task("x", 1, "n1", "shutdown", "shutdown", T0)], &target(Mode::Replicated(0)));
        assert!(none.converged && none.failure.is_none());
    }

    #[test]
    fn repeated_failures_in_a_slot_stop_the_wait() {
        let mut tasks = vec![
            task("a1", 1, "n1", "shutdown", "rejected", T0),
            task("a2", 1, "n1", "shutdown", "rejected", T1),
            task("a3", 1, "n1", "running", "pending", T2),
            task("b", 2, "n2", "running", "running", T0),
        ];
        for t in &mut tasks[..2] {
            t.error = "pulling nothing-here:1: not found".into();
        }
        assert!(assess(&tasks, &target(Mode::Replicated(2))).failure.is_none(), "two failures: keep waiting");
        tasks.push(pb::Task { error: "pulling nothing-here:1: not found".into(), ..task("a4", 1, "n1", "shutdown", "rejected", T3) });
        tasks[2].created_at = "2024-05-01T12:00:04Z".into();
        let a = assess(&tasks, &target(Mode::Replicated(2)));
        let failure = a.failure.unwrap();
        assert!(failure.starts_with("task web.1 was rejected 3 times, last with \"pulling nothing-here:1: not found\""), "{failure}");
        assert!(!failure.contains('\n'));
        // A fourth attempt that runs ends the trouble.
        tasks[2].state = "running".into();
        let a = assess(&tasks, &target(Mode::Replicated(2)));
        assert!(a.failure.is_none() && a.converged, "{a:?}");
    }

    #[test]
    fn a_spent_restart_policy_stops_the_wait() {
        let mut tasks = vec![task("a", 1, "n1", "shutdown", "failed", T0)];
        tasks[0].error = "non-zero exit (3)".into();
        let failure = assess(&tasks, &target(Mode::Replicated(1))).failure.unwrap();
        assert_eq!(
            failure,
            "task web.1 ended (failed: non-zero exit (3)) and its restart policy does not start it again; see `shoal service ps web`"
        );
        // Being restarted (a replacement is wanted) is not a failure.
        tasks.push(task("b", 1, "n1", "running", "pending", T1));
        assert!(assess(&tasks, &target(Mode::Replicated(1))).failure.is_none());
    }

    #[test]
    fn an_update_waits_for_the_replacements() {
        let since = humantime::parse_rfc3339(T1).ok();
        let updated = Target { since, replaced: true, ..target(Mode::Replicated(2)) };
        let mut tasks = vec![
            task("old1", 1, "n1", "running", "running", T0),
            task("old2", 2, "n2", "running", "running", T0),
        ];
        let a = assess(&tasks, &updated);
        assert!(!a.converged, "old tasks still wanted");
        assert_eq!(a.running, 0);
        tasks[0].desired_state = "shutdown".into();
        tasks[1].desired_state = "shutdown".into();
        tasks.push(task("new1", 1, "n1", "running", "running", T2));
        tasks.push(task("new2", 2, "n2", "running", "starting", T2));
        assert!(!assess(&tasks, &updated).converged);
        tasks[3].state = "running".into();
        assert!(assess(&tasks, &updated).converged);
        // Old failures do not count against the update.
        let mut history: Vec<pb::Task> =
            (0..3).map(|i| pb::Task { error: "boom".into(), ..task(&format!("f{i}"), 1, "n1", "shutdown", "failed", T0) }).collect();
        history.extend(tasks);
        assert!(assess(&history, &updated).failure.is_none());
        // A scale (nothing replaced) counts the tasks it keeps.
        let scaled = Target { since, replaced: false, ..target(Mode::Replicated(2)) };
        let kept = vec![task("old1", 1, "n1", "running", "running", T0), task("new2", 2, "n2", "running", "running", T2)];
        assert!(assess(&kept, &scaled).converged);
    }

    #[test]
    fn a_rollout_ends_as_its_status_says() {
        let status = |state: pb::UpdateState, message: &str| pb::UpdateStatus { state: state as i32, message: message.into(), ..Default::default() };
        assert!(rollout_outcome(None, Rollout::Update, "web").is_none());
        assert!(rollout_outcome(Some(&status(pb::UpdateState::Updating, "")), Rollout::Update, "web").is_none());
        assert!(rollout_outcome(Some(&status(pb::UpdateState::Completed, "")), Rollout::Update, "web").unwrap().is_ok());
        let paused = rollout_outcome(Some(&status(pb::UpdateState::Paused, "update paused due to failure")), Rollout::Update, "web");
        let error = paused.unwrap().unwrap_err().to_string();
        assert!(error.starts_with("update paused due to failure; see `shoal service ps web`"), "{error}");
        let rolled = rollout_outcome(Some(&status(pb::UpdateState::RollbackCompleted, "update rolled back due to x")), Rollout::Update, "web");
        assert!(rolled.unwrap().is_err(), "an automatic rollback is not a successful update");
        let asked = rollout_outcome(Some(&status(pb::UpdateState::RollbackCompleted, "")), Rollout::Rollback, "web");
        assert!(asked.unwrap().is_ok());
    }

    #[test]
    fn global_services_converge_per_node() {
        let mut tasks = vec![
            task("a", 0, "n1", "running", "running", T0),
            task("b", 0, "n2", "running", "preparing", T0),
            task("c", 0, "n3", "shutdown", "shutdown", T0),
        ];
        let a = assess(&tasks, &target(Mode::Global));
        assert_eq!((a.running, a.desired, a.converged), (1, 2, false));
        assert_eq!(a.lines[1], ("host-n2".to_string(), "preparing".to_string()));
        tasks[1].state = "running".into();
        let a = assess(&tasks, &target(Mode::Global));
        assert!(a.converged && a.failure.is_none(), "{a:?}");
        let empty = assess(&[], &target(Mode::Global));
        assert!(empty.converged && empty.desired == 0);
    }
}
