//! The `syncgate` command line. Every command reads the same configuration as
//! `serve`, and works while the server runs (SQLite WAL; CLI writes wait on
//! the lock). Results go to stdout bare, so scripts can capture them; errors
//! go to stderr with a non-zero exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::auth::Tokens;
use crate::config::{secret, Config, ExposeSecret};
use crate::duration::Dur;
use crate::startup::{Server, StartupError};
pub use calendly_cmd::CalendlyCommand;

mod calendly_cmd;
mod users_cmd;

#[derive(Parser, Debug)]
#[command(name = "syncgate", version, about = "Calendar sync and realtime server for advisers")]
pub struct Cli {
    /// Configuration file (default: ./config.toml when present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Log format: text or json (overrides log.format).
    #[arg(long, global = true)]
    pub log_format: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Print a token: a user's JWT, or the anon key.
    Token(TokenArgs),
    /// Print a single-use sign-in URL for a user, valid 15 minutes.
    LoginLink {
        #[arg(long)]
        user: i64,
    },
    /// Copy the database to FILE, consistently, while the server runs.
    Backup {
        #[arg(long)]
        to: PathBuf,
    },
    /// Print the schema version and run SQLite's integrity check.
    Check,
    /// Copy the SQLite database (database.path) into an empty PostgreSQL
    /// database, change log and ids included; stop the server first.
    MoveToPostgres {
        /// postgres://user:password@host:5432/db (as database.url takes it).
        #[arg(long, env = "SYNCGATE_MOVE_TO_URL", hide_env_values = true)]
        url: String,
    },
    /// Calendly webhook subscriptions.
    #[command(subcommand)]
    Calendly(CalendlyCommand),
}

/// Changes go through the running server when there is one (so open
/// browsers see them at once); without one they are written here.
#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user; prints the new id.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "user")]
        role: String,
    },
    /// Add a user and print a single-use sign-in link for them (valid 15 minutes).
    Invite {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "user")]
        role: String,
    },
    /// One line per user, tab-separated: id, email, name, role, status,
    /// last seen, Google (yes/no/reconnect), Calendly (yes/no); `-` for none.
    List,
    /// Make a user an admin or an ordinary user; prints their line.
    Role {
        id: i64,
        /// admin or user
        role: String,
    },
    /// Refuse the user's tokens and stop their Google sync (data stays); prints their line.
    Disable { id: i64 },
    /// Let a disabled user in again (Google channels re-created); prints their line.
    Enable { id: i64 },
    /// Delete the user and all their clients, meetings and pipeline; prints the id.
    Remove {
        id: i64,
        /// Confirm: the data cannot be brought back.
        #[arg(long)]
        yes: bool,
    },
    /// Sign the user out everywhere (every token issued until now is refused); prints the id.
    Signout { id: i64 },
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The user the token is for.
    #[arg(long, conflicts_with = "anon", required_unless_present = "anon")]
    user: Option<i64>,
    /// Print the anon key instead.
    #[arg(long)]
    anon: bool,
    /// Lifetime, like 15m, 24h or 7d.
    #[arg(long, default_value = "24h")]
    ttl: Dur,
}

pub fn main() -> ExitCode {
    // Before any HTTP client is built (reqwest has no TLS provider of its own here).
    crate::provider::install_tls();
    let cli = Cli::parse();
    let loaded = match Config::load(cli.config.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("syncgate: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = loaded.config.clone();
    if let Some(f) = &cli.log_format {
        config.log.format = f.clone();
    }
    init_logging(&config);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    // A short or empty secret would let anyone sign tokens: no command runs with one.
    if let Err(e) = secret::check_secret(&config) {
        eprintln!("syncgate: {e}");
        return ExitCode::from(2);
    }
    // Each command fails with its own error; all of them print as one sentence.
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).map_err(Into::into),
        Command::User(cmd) => user(&config, cmd).map_err(Into::into),
        Command::Token(args) => token(&config, args).map_err(Into::into),
        Command::LoginLink { user } => users_cmd::login_link(&config, user).map_err(Into::into),
        Command::Backup { to } => backup(&config, &to).map_err(Into::into),
        Command::Check => check(&config),
        Command::MoveToPostgres { url } => move_to_postgres(&config, &url),
        Command::Calendly(c) => calendly_cmd::run(&config, c).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("syncgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Human-readable logs to stderr by default, JSON lines with `log.format = "json"`.
pub fn init_logging(config: &Config) {
    // SYNCGATE_LOG wins over log.level; non-ASCII text is skipped before the
    // parser sees it (tracing-subscriber panics on some of it).
    let from_env = std::env::var("SYNCGATE_LOG").ok().filter(|v| v.is_ascii());
    let filter = from_env
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .or_else(|| config.log.level.is_ascii().then(|| tracing_subscriber::EnvFilter::try_new(&config.log.level).ok()).flatten())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if config.log.format == "json" {
        builder.json().with_current_span(true).with_span_list(false).try_init()
    } else {
        builder.try_init()
    };
}

fn serve(config: Config) -> Result<(), StartupError> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(StartupError::Runtime)?;
    rt.block_on(async move {
        let server = Server::build(config).await?;
        // A plain print, not a log line: scripts wait for it on stdout.
        println!("syncgate listening on http://{}", server.addr());
        use std::io::Write;
        let _ = std::io::stdout().flush();
        server.run(shutdown_signal()).await;
        Ok(())
    })
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn user(config: &Config, cmd: UserCommand) -> Result<(), users_cmd::UserCommandError> {
    use crate::model::AccountStatus;
    use users_cmd::{role, Change, UserCommandError};
    let change = match cmd {
        UserCommand::List => return users_cmd::list(config),
        UserCommand::Add { email, name, role: r } => Change::Add { email, name, role: role(&r)? },
        UserCommand::Invite { email, name, role: r } => Change::Invite { email, name, role: role(&r)? },
        UserCommand::Role { id, role: r } => Change::Role { id, role: role(&r)? },
        UserCommand::Disable { id } => Change::Status { id, status: AccountStatus::Disabled },
        UserCommand::Enable { id } => Change::Status { id, status: AccountStatus::Active },
        UserCommand::Remove { id, yes } => {
            if !yes {
                return Err(UserCommandError::Refused(format!(
                    "removing user {id} deletes them and all their clients, meetings and pipeline; add --yes to confirm"
                )));
            }
            Change::Remove { id }
        }
        UserCommand::Signout { id } => Change::SignOut { id },
    };
    users_cmd::change(config, change)
}

fn token(config: &Config, args: TokenArgs) -> Result<(), users_cmd::UserCommandError> {
    use users_cmd::UserCommandError;
    let (secret, _) = crate::config::secret::resolve_secret(config).map_err(|e| UserCommandError::Setup(e.to_string()))?;
    let user = match (args.anon, args.user) {
        (true, _) => None,
        (false, Some(id)) => Some(id),
        (false, None) => return Err(UserCommandError::Refused("give --user ID or --anon".into())),
    };
    users_cmd::token(config, &Tokens::new(secret.expose_secret()), user, args.ttl.as_secs() as i64)
}

/// `syncgate backup --to FILE`: prints the file written.
fn backup(config: &Config, to: &std::path::Path) -> Result<(), crate::store::backup::BackupError> {
    crate::ops::backup::backup(&config.database, to)?;
    println!("{}", to.display());
    Ok(())
}

/// `syncgate check` on PostgreSQL: connectivity and the schema version (and
/// the oldest syncgate the database allows). Integrity is PostgreSQL's own
/// business (its checksums, `amcheck`); this does not pretend to check it.
fn check_postgres(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    use crate::config::ExposeSecret;
    use crate::store::pg;
    let url = pg::PgUrl::parse(config.database.url.expose_secret())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let wait = config.database.connect_timeout.0;
    let schema = rt
        .block_on(async { tokio::time::timeout(wait, pg::migrations::check_compatible(&url)).await })
        .map_err(|_| format!("the database {url} did not answer within {wait:?}"))??;
    println!("PostgreSQL {url}: connected");
    println!("schema version {} (this syncgate: {})", schema.version, pg::migrations::latest_version());
    if let Some(min) = schema.min_binary_version {
        println!("oldest syncgate this database allows: {min} (this is {})", pg::BinaryVersion::this_binary());
    }
    if schema.version < pg::migrations::latest_version() {
        println!("the next `syncgate serve` applies the missing migrations");
    }
    Ok(())
}

/// `syncgate move-to-postgres`: refuses while a server serves this data
/// folder, then copies and prints each table's count.
fn move_to_postgres(config: &Config, url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    if let Some(server) = rt.block_on(crate::ops::running::locate(config))? {
        return Err(format!("a syncgate server serves this data folder at {server}: stop it first, then move").into());
    }
    let moved = crate::store::move_to_pg::move_to_postgres(&config.database, url)?;
    for (table, rows) in &moved.tables {
        println!("{table}\t{rows}");
    }
    println!("moved; the change log's head is seq {}. Start syncgate with database.url set to this database.", moved.seq_head);
    Ok(())
}

/// `syncgate check`: the schema version and the integrity verdict; fails when not ok.
fn check(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    if crate::store::config_names_postgres(&config.database) {
        return check_postgres(config);
    }
    let integrity = crate::ops::backup::check(&config.database)?;
    for line in integrity.report() {
        println!("{line}");
    }
    if integrity.is_ok() {
        Ok(())
    } else {
        Err("the integrity check found problems".into())
    }
}
