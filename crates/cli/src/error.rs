//! The one error type client commands return: a sentence for the user.

use std::fmt;

#[derive(Debug)]
pub struct CliError(String);

impl CliError {
    pub fn msg(message: impl Into<String>) -> Self {
        CliError(message.into())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

/// A daemon's or manager's refusal already is a sentence; connection-level
/// failures get one that says what to check.
impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().trim();
        match status.code() {
            tonic::Code::Unavailable if message.is_empty() || message.contains("transport") || message.contains("connection") => {
                CliError(format!("the daemon or manager is unreachable ({message}); check that it is running"))
            }
            _ if message.is_empty() => CliError(format!("the request failed ({})", status.code())),
            _ => CliError(message.to_string()),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError(e.to_string())
    }
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> Self {
        CliError(format!("cannot encode JSON: {e}"))
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;
