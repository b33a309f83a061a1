//! Running the `nft` binary (JSON API) in the calling thread's namespace.
//!
//! Transactions are sent by our own spawn rather than the nftables crate's
//! `apply_ruleset`: that helper leaves nft's stderr attached to ours, so a
//! refused transaction came back as an empty error while the reason went
//! to the daemon's terminal. Here the reason is part of the error.

use std::io::Write;
use std::process::{Command, Stdio};

use nftables::batch::Batch;
use nftables::helper::{get_current_ruleset_raw, NftablesError, DEFAULT_NFT};

use super::error::FirewallError;

const NFT: &str = "nft";

/// Runs `batch` as one transaction; an empty batch is not worth a process.
pub(crate) fn apply(
    batch: Batch<'static>,
    action: &'static str,
    netns: &str,
) -> Result<(), FirewallError> {
    let nftables = batch.to_nftables();
    if nftables.objects.is_empty() {
        return Ok(());
    }
    let fail = |detail: String| FirewallError::Nft {
        action,
        netns: netns.to_string(),
        detail,
    };
    let payload = serde_json::to_vec(&nftables).map_err(|e| fail(e.to_string()))?;
    let mut child = Command::new(NFT)
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("could not run {NFT}: {e}")))?;
    // nft reads all of stdin before it answers, so writing first cannot
    // deadlock on a full stderr pipe.
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&payload)
            .map_err(|e| fail(format!("could not write to {NFT}: {e}")))?;
    }
    let output = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(fail(first_error(&stderr)))
    }
}

/// `nft -j <args>`'s output.
pub(crate) fn list_json(args: &[&str], netns: &str) -> Result<String, FirewallError> {
    get_current_ruleset_raw(DEFAULT_NFT, args).map_err(|error| {
        let detail = match error {
            NftablesError::NftFailed { stderr, .. } => first_error(&stderr),
            other => other.to_string(),
        };
        FirewallError::Nft {
            action: "listing the ruleset",
            netns: netns.to_string(),
            detail,
        }
    })
}

/// nft explains a refused command over several lines (the message, the
/// offending input, a caret line); the message lines are what matter.
fn first_error(stderr: &str) -> String {
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("Error"))
        .map(str::trim)
        .collect();
    if errors.is_empty() {
        stderr.trim().to_string()
    } else {
        errors.join("; ")
    }
}
