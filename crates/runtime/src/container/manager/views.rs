//! What `container ls`, `inspect` and `logs` show of the containers.

use super::*;

impl ContainerManager {
    pub fn list(&self, all: bool) -> Vec<ContainerSummary> {
        let mut rows: Vec<ContainerSummary> =
            self.lock().values().map(|e| summary(e)).filter(|s| all || s.status == Status::Running).collect();
        rows.sort_by(|a, b| b.created.cmp(&a.created));
        rows
    }

    /// `container inspect` of a name, id or unique id prefix.
    pub fn inspect(&self, name: &str) -> Result<ContainerDetails> {
        let entry = self.find(name)?;
        let state = match entry.phase.borrow().clone() {
            Phase::Created => ContainerState {
                status: Status::Created,
                paused: false,
                pid: None,
                exit_code: None,
                oom_killed: false,
                started_at: None,
                finished_at: None,
                error: None,
                health: None,
            },
            Phase::Running(s) => ContainerState {
                status: Status::Running,
                paused: super::pause::is_paused(&entry),
                pid: Some(s.pid),
                exit_code: None,
                oom_killed: false,
                started_at: Some(s.started_at),
                finished_at: None,
                error: None,
                health: entry.health.as_ref().map(|h| h.borrow().clone()),
            },
            Phase::Exited(x) => {
                let started = state::read_json::<Started>(&entry.dir.join(STARTED_FILE));
                ContainerState {
                    status: if x.error.is_some() { Status::Dead } else { Status::Exited },
                    paused: false,
                    pid: None,
                    exit_code: Some(x.code),
                    oom_killed: x.oom_killed,
                    started_at: started.map(|s| s.started_at),
                    finished_at: Some(x.finished_at),
                    error: x.error,
                    health: entry.health.as_ref().map(|h| h.borrow().clone()),
                }
            }
        };
        let record = &entry.record;
        Ok(ContainerDetails {
            id: record.id.clone(),
            name: record.name.clone(),
            image: record.image.clone(),
            image_id: record.image_id.clone(),
            created: record.created.clone(),
            state,
            mounts: record.mounts.clone(),
            limits: (&record.limits).into(),
            labels: record.labels.clone(),
            config: record.clone(),
            log_path: entry.dir.join(logs::LOG_FILE),
        })
    }

    /// The container's output. With `follow`, new entries until the
    /// container has exited and its output is drained.
    pub fn logs(&self, name: &str, options: LogOptions) -> Result<LogEntries> {
        let entry = self.find(name)?;
        Ok(logs::read(entry.dir.clone(), options, entry.log_closed.subscribe()))
    }

    /// Ids of the images containers (running or not) were made from, so
    /// the image store can refuse to remove them.
    pub fn images_in_use(&self) -> HashSet<String> {
        self.lock().values().map(|e| e.record.image_id.clone()).collect()
    }

    /// Each container's name, whether it runs, and its directory (its
    /// writable layer and logs are there), for `system df`.
    pub fn directories(&self) -> Vec<(String, bool, std::path::PathBuf)> {
        self.lock()
            .values()
            .map(|e| (e.record.name.clone(), matches!(*e.phase.borrow(), Phase::Running(_)), e.dir.clone()))
            .collect()
    }
}

fn summary(entry: &Entry) -> ContainerSummary {
    let (status, exit_code, started_at, finished_at) = match entry.phase.borrow().clone() {
        Phase::Created => (Status::Created, None, None, None),
        Phase::Running(s) => (Status::Running, None, Some(s.started_at), None),
        Phase::Exited(x) => {
            let status = if x.error.is_some() { Status::Dead } else { Status::Exited };
            let started = state::read_json::<Started>(&entry.dir.join(STARTED_FILE)).map(|s| s.started_at);
            (status, Some(x.code), started, Some(x.finished_at))
        }
    };
    ContainerSummary {
        id: entry.record.id.clone(),
        name: entry.record.name.clone(),
        image: entry.record.image.clone(),
        image_id: entry.record.image_id.clone(),
        command: entry.record.args.join(" "),
        created: entry.record.created.clone(),
        status,
        paused: super::pause::is_paused(entry),
        exit_code,
        started_at,
        finished_at,
        labels: entry.record.labels.clone(),
        health: entry.health.as_ref().map(|h| h.borrow().status),
    }
}

impl ContainerManager {
    /// `container top`: the processes in a running container's cgroup.
    pub fn top(&self, name: &str) -> Result<Vec<crate::container::top::Process>> {
        let entry = self.find(name)?;
        let (_, cgroup) = self.running_cgroup(&entry)?;
        Ok(cgroup.processes().into_iter().filter_map(crate::container::top::read).collect())
    }

    /// `container stats`: a running container's counters now.
    pub fn stats(&self, name: &str) -> Result<(String, String, crate::container::stats::Usage)> {
        let entry = self.find(name)?;
        let (started, cgroup) = self.running_cgroup(&entry)?;
        let usage = crate::container::stats::read(&cgroup, started.pid);
        Ok((entry.record.id.clone(), entry.record.name.clone(), usage))
    }

    /// Bytes in a container's writable layer (what removing it frees).
    pub fn writable_layer_size(&self, name: &str) -> Result<u64> {
        let entry = self.find(name)?;
        Ok(crate::volume::disk_usage(&entry.dir.join("upper")))
    }
}

/// What `commit` reads of a container.
pub struct CommitSource {
    pub record: ContainerRecord,
    /// Its overlayfs upper directory: everything it changed.
    pub upper: PathBuf,
    pub running: bool,
    pub paused: bool,
}

impl ContainerManager {
    /// The container `name` as `commit` needs it (running or not).
    pub fn commit_source(&self, name: &str) -> Result<CommitSource> {
        let entry = self.find(name)?;
        let running = matches!(*entry.phase.borrow(), Phase::Running(_));
        Ok(CommitSource { record: entry.record.clone(), upper: entry.dir.join("upper"), running, paused: running && pause::is_paused(&entry) })
    }
}
