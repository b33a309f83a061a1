//! Debug forms of the messages that carry a secret's value: everything but
//! the value, so a `?message` in a log line cannot leak it.

use std::fmt;

use crate::pb;

impl fmt::Debug for pb::CreateSecretRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateSecretRequest")
            .field("name", &self.name)
            .field("data", &Redacted(self.data.len()))
            .field("labels", &self.labels)
            .finish()
    }
}

impl fmt::Debug for pb::FileData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileData")
            .field("kind", &self.kind())
            .field("id", &self.id)
            .field("name", &self.name)
            .field("data", &Redacted(self.data.len()))
            .finish()
    }
}

/// Stands in for a value: its size only.
pub struct Redacted(pub usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes redacted>", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_never_show_in_debug_output() {
        let request = pb::CreateSecretRequest { name: "db_pass".into(), data: b"hunter2-value".to_vec(), labels: Default::default() };
        let data = pb::FileData { kind: pb::FileKind::Secret.into(), id: "s1".into(), name: "db_pass".into(), data: b"hunter2-value".to_vec() };
        for text in [format!("{request:?}"), format!("{data:?}"), format!("{:?}", pb::AssignmentsMessage { files_changed: vec![data.clone()], ..Default::default() })] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("db_pass") && text.contains("13 bytes redacted"), "{text}");
        }
    }
}
