//! `shoal login` / `shoal logout`: registry credentials, checked by the
//! daemon against the registry and kept where docker keeps them (see
//! [`crate::credentials`]), then used by pull and push.

use std::io::{BufRead, IsTerminal, Write};

use shoal_proto::pb;

use crate::client::ConnectArgs;
use crate::credentials::{registry_host, server_key, CredentialStore};
use crate::error::{CliError, CliResult};

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    #[arg(short, long)]
    username: Option<String>,
    /// The password (prefer --password-stdin: a command line is visible to others)
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from stdin
    #[arg(long)]
    password_stdin: bool,
    /// The registry, host[:port] (Docker Hub if none)
    server: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// The registry, host[:port] (Docker Hub if none)
    server: Option<String>,
}

pub async fn login(args: LoginArgs, connect: &ConnectArgs) -> CliResult {
    let key = server_key(args.server.as_deref().unwrap_or(""));
    if args.password.is_some() && args.password_stdin {
        return Err(CliError::msg("--password and --password-stdin both give the password; use one"));
    }
    let username = match args.username {
        Some(user) => user,
        None if std::io::stdin().is_terminal() && !args.password_stdin => prompt("Username: ", true)?,
        None => return Err(CliError::msg("no username given; pass --username (with --password-stdin to read the password)")),
    };
    let password = match (args.password, args.password_stdin) {
        (Some(password), _) => password,
        (None, true) => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) if std::io::stdin().is_terminal() => prompt("Password: ", false)?,
        (None, false) => return Err(CliError::msg("no password given; pass --password-stdin and write it to stdin")),
    };
    if username.is_empty() || password.is_empty() {
        return Err(CliError::msg("the username and the password must not be empty"));
    }
    let mut runtime = pb::runtime_client::RuntimeClient::new(connect.connect().await?);
    let credentials = pb::RegistryCredentials { username: username.clone(), password: password.clone() };
    runtime.login(pb::LoginRequest { registry: registry_host(&key), credentials: Some(credentials) }).await?;
    let store = CredentialStore::locate()?;
    store.set(&key, &username, &password)?;
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(args: LogoutArgs) -> CliResult {
    let key = server_key(args.server.as_deref().unwrap_or(""));
    if CredentialStore::locate()?.remove(&key)? {
        println!("Removing login credentials for {key}");
    } else {
        println!("Not logged in to {key}");
    }
    Ok(())
}

/// Asks on the terminal; the answer is not echoed unless `echo`.
fn prompt(question: &str, echo: bool) -> CliResult<String> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    let stdin = std::io::stdin();
    let saved = (!echo).then(|| nix::sys::termios::tcgetattr(&stdin).ok()).flatten();
    if let Some(saved) = &saved {
        let mut quiet = saved.clone();
        quiet.local_flags.remove(nix::sys::termios::LocalFlags::ECHO);
        let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &quiet);
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(saved) = &saved {
        let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, saved);
        eprintln!();
    }
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
