//! Names both sides check: the CLI before sending (so a typo is reported
//! without a daemon), the managers on receipt.

/// docker's label naming the stack an object belongs to: tools find a
/// stack's objects by it, and the managers scope a deploy with it.
pub const STACK_NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

/// A stack's name, as docker's: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`; the error is
/// the sentence to show.
pub fn check_stack_name(name: &str) -> Result<(), String> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!("the stack name {name:?} is invalid; use letters, digits, '_', '.' and '-', starting with a letter or digit"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stack_names_are_docker_s() {
        for bad in ["", "-app", "my app", "app/x"] {
            assert!(super::check_stack_name(bad).unwrap_err().contains("stack name"), "{bad:?}");
        }
        assert!(super::check_stack_name("app_1.v-2").is_ok());
    }
}
