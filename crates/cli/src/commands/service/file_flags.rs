//! The secrets and configs a service's tasks get as files: `--secret` and
//! `--config` on `service create`, their `-add/-rm` forms on `service
//! update`, parsed into a [`FileChange`]. The manager resolves names to
//! ids; targets and modes are checked here first, so a typo needs no
//! daemon.

use shoal_proto::pb;
use shoal_proto::task_files::container_path;

use crate::error::{CliError, CliResult};

#[derive(Debug, Default, clap::Args)]
pub struct FileCreateFlags {
    /// Give the tasks a secret at /run/secrets/NAME: NAME or source=NAME[,target=T][,uid=U][,gid=G][,mode=0400]
    #[arg(long = "secret", value_name = "SECRET")]
    secrets: Vec<String>,
    /// Give the tasks a config at /NAME: NAME or source=NAME[,target=/PATH][,uid=U][,gid=G][,mode=0444]
    #[arg(long = "config", value_name = "CONFIG")]
    configs: Vec<String>,
}

#[derive(Debug, Default, clap::Args)]
pub struct FileUpdateFlags {
    /// Add a secret: NAME or source=NAME[,target=T][,uid=U][,gid=G][,mode=0400] (replaces one at the same target)
    #[arg(long = "secret-add", value_name = "SECRET")]
    secret_add: Vec<String>,
    /// Remove a secret (name or id)
    #[arg(long = "secret-rm", value_name = "SECRET")]
    secret_rm: Vec<String>,
    /// Add a config: NAME or source=NAME[,target=/PATH][,uid=U][,gid=G][,mode=0444] (replaces one at the same target)
    #[arg(long = "config-add", value_name = "CONFIG")]
    config_add: Vec<String>,
    /// Remove a config (name or id)
    #[arg(long = "config-rm", value_name = "CONFIG")]
    config_rm: Vec<String>,
}

/// What a create or update changes in a spec's secrets and configs:
/// removals first, then additions (so `--secret-rm a --secret-add
/// source=a_v2,target=a` rotates a value under the same path).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FileChange {
    secrets_rm: Vec<String>,
    secrets_add: Vec<pb::FileReference>,
    configs_rm: Vec<String>,
    configs_add: Vec<pb::FileReference>,
}

/// `NAME` or `source=NAME,target=T,uid=U,gid=G,mode=0400`, as docker takes
/// `--secret` and `--config`.
pub fn parse_reference(flag: &str, kind: pb::FileKind, value: &str) -> CliResult<pb::FileReference> {
    let invalid = |why: String| CliError::msg(format!("{flag} {value:?} is invalid: {why}"));
    let mut reference = pb::FileReference::default();
    if !value.contains('=') {
        reference.name = value.trim().to_string();
    } else {
        for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let Some((key, val)) = field.split_once('=') else {
                return Err(invalid(format!("field {field:?} has no value; write it as KEY=VALUE")));
            };
            let (key, val) = (key.trim(), val.trim());
            let number = |what: &str| {
                val.parse::<u32>().map_err(|_| invalid(format!("{what} {val:?} is not a number; give a numeric {what} such as 1000")))
            };
            match key {
                "source" | "src" => reference.name = val.to_string(),
                "target" | "dst" | "destination" => reference.target = val.to_string(),
                "uid" => reference.uid = number("uid")?,
                "gid" => reference.gid = number("gid")?,
                "mode" => {
                    let mode = u32::from_str_radix(val, 8)
                        .map_err(|_| invalid(format!("mode {val:?} is not octal; give permission bits such as 0400")))?;
                    if mode > 0o777 {
                        return Err(invalid(format!("mode {val:?} is more than permission bits; give at most 0777")));
                    }
                    reference.mode = Some(mode);
                }
                other => return Err(invalid(format!("unknown field {other:?}; use source, target, uid, gid or mode"))),
            }
        }
    }
    if reference.name.is_empty() {
        return Err(invalid("it names no source; give NAME or source=NAME".into()));
    }
    if !reference.target.is_empty() {
        container_path(kind, &reference.target).map_err(|e| CliError::msg(format!("{flag} {value:?}: {e}")))?;
    }
    Ok(reference)
}

fn parse_all(flag: &str, kind: pb::FileKind, values: &[String]) -> CliResult<Vec<pb::FileReference>> {
    values.iter().map(|v| parse_reference(flag, kind, v)).collect()
}

impl FileCreateFlags {
    pub fn change(&self) -> CliResult<FileChange> {
        Ok(FileChange {
            secrets_add: parse_all("--secret", pb::FileKind::Secret, &self.secrets)?,
            configs_add: parse_all("--config", pb::FileKind::Config, &self.configs)?,
            ..Default::default()
        })
    }
}

impl FileUpdateFlags {
    pub fn change(&self) -> CliResult<FileChange> {
        for (flag, values) in [("--secret-rm", &self.secret_rm), ("--config-rm", &self.config_rm)] {
            if let Some(bad) = values.iter().find(|v| v.trim().is_empty() || v.contains('=')) {
                return Err(CliError::msg(format!("{flag} {bad:?} is invalid; give the name or id of one to remove")));
            }
        }
        Ok(FileChange {
            secrets_rm: self.secret_rm.iter().map(|s| s.trim().to_string()).collect(),
            secrets_add: parse_all("--secret-add", pb::FileKind::Secret, &self.secret_add)?,
            configs_rm: self.config_rm.iter().map(|s| s.trim().to_string()).collect(),
            configs_add: parse_all("--config-add", pb::FileKind::Config, &self.config_add)?,
        })
    }
}

/// Where a reference puts its file (its target, else its name).
fn path_of(kind: pb::FileKind, reference: &pb::FileReference) -> String {
    let target = if reference.target.is_empty() { &reference.name } else { &reference.target };
    container_path(kind, target).unwrap_or_else(|_| target.clone())
}

fn change_list(kind: pb::FileKind, list: &mut Vec<pb::FileReference>, remove: &[String], add: &[pb::FileReference]) -> CliResult {
    for wanted in remove {
        let before = list.len();
        list.retain(|r| r.name != *wanted && r.id != *wanted);
        if list.len() == before {
            let what = if kind == pb::FileKind::Config { "config" } else { "secret" };
            return Err(CliError::msg(format!("the service has no {what} {wanted:?} to remove; `shoal service inspect` lists its {what}s")));
        }
    }
    for reference in add {
        let path = path_of(kind, reference);
        list.retain(|r| path_of(kind, r) != path);
        list.push(reference.clone());
    }
    Ok(())
}

impl FileChange {
    pub fn apply(&self, task: &mut pb::TaskSpec) -> CliResult {
        change_list(pb::FileKind::Secret, &mut task.secrets, &self.secrets_rm, &self.secrets_add)?;
        change_list(pb::FileKind::Config, &mut task.configs, &self.configs_rm, &self.configs_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(value: &str) -> CliResult<pb::FileReference> {
        parse_reference("--secret", pb::FileKind::Secret, value)
    }

    #[test]
    fn references_parse_docker_syntax() {
        assert_eq!(secret("db_pass").unwrap(), pb::FileReference { name: "db_pass".into(), ..Default::default() });
        let full = secret("source=db_pass,target=app/db,uid=1000,gid=1001,mode=0400").unwrap();
        assert_eq!((full.name.as_str(), full.target.as_str(), full.uid, full.gid, full.mode), ("db_pass", "app/db", 1000, 1001, Some(0o400)));
        assert_eq!(secret("source=k,mode=440").unwrap().mode, Some(0o440));
        let config = parse_reference("--config", pb::FileKind::Config, "source=app.conf,target=/etc/app.conf").unwrap();
        assert_eq!(config.target, "/etc/app.conf");
    }

    #[test]
    fn bad_references_are_one_sentence_naming_the_value() {
        for (bad, says) in [
            ("source=a,mode=rw", "mode \"rw\" is not octal"),
            ("source=a,mode=0999", "not octal"),
            ("source=a,mode=4755", "at most 0777"),
            ("source=a,target=../etc/passwd", "\"../etc/passwd\""),
            ("source=a,uid=root", "uid \"root\" is not a number"),
            ("target=x", "names no source"),
            ("source=a,colour=red", "unknown field \"colour\""),
            ("source=a,target", "has no value"),
        ] {
            let error = secret(bad).unwrap_err().to_string();
            assert!(error.contains(says) && !error.contains('\n'), "{bad}: {error}");
        }
    }

    #[test]
    fn rotation_replaces_the_file_at_the_same_target() {
        let mut task = pb::TaskSpec {
            secrets: vec![pb::FileReference { id: "s1".into(), name: "db_pass".into(), target: "db_pass".into(), mode: Some(0o444), ..Default::default() }],
            ..Default::default()
        };
        let rotate = FileUpdateFlags {
            secret_rm: vec!["db_pass".into()],
            secret_add: vec!["source=db_pass_v2,target=db_pass".into()],
            ..Default::default()
        };
        rotate.change().unwrap().apply(&mut task).unwrap();
        assert_eq!(task.secrets.len(), 1);
        assert_eq!((task.secrets[0].name.as_str(), task.secrets[0].target.as_str()), ("db_pass_v2", "db_pass"));

        // An add alone at the same path replaces the one there.
        let add = FileUpdateFlags { secret_add: vec!["source=other,target=/run/secrets/db_pass".into()], ..Default::default() };
        add.change().unwrap().apply(&mut task).unwrap();
        assert_eq!(task.secrets.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["other"]);

        let missing = FileUpdateFlags { config_rm: vec!["nope".into()], ..Default::default() };
        let error = missing.change().unwrap().apply(&mut task).unwrap_err().to_string();
        assert!(error.contains("no config \"nope\""), "{error}");
    }
}
