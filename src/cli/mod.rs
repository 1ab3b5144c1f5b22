//! The `syncgate` command line. Every command reads the same configuration as
//! `serve`, and works while the server runs (SQLite WAL; CLI writes wait on
//! the lock). Results go to stdout bare, so scripts can capture them; errors
//! go to stderr with a non-zero exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::auth::{self, Tokens};
use crate::config::Config;
use crate::duration::Dur;
use crate::store::{self, users};
pub use calendly_cmd::CalendlyCommand;

mod calendly_cmd;
pub mod running;
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
    crate::google::install_tls();
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
    if let Err(e) = auth::check_secret(&config) {
        eprintln!("syncgate: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::User(cmd) => user(&config, cmd),
        Command::Token(args) => token(&config, args),
        Command::LoginLink { user } => login_link(&config, user),
        Command::Backup { to } => backup(&config, &to),
        Command::Check => check(&config),
        Command::Calendly(c) => calendly_cmd::run(&config, c).map_err(|e| e.to_string()),
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

fn serve(config: Config) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let server = crate::startup::Server::build(config).await?;
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

fn tokens(config: &Config) -> Result<Tokens, String> {
    let (secret, _) = auth::resolve_secret(config)?;
    Ok(Tokens::new(&secret))
}

fn user(config: &Config, cmd: UserCommand) -> Result<(), String> {
    use users_cmd::Change;
    let change = match cmd {
        UserCommand::List => return users_cmd::list(config),
        UserCommand::Add { email, name, role } => Change::Add { email, name, role },
        UserCommand::Invite { email, name, role } => Change::Invite { email, name, role },
        UserCommand::Role { id, role } => Change::Role { id, role },
        UserCommand::Disable { id } => Change::Status { id, status: "disabled".into() },
        UserCommand::Enable { id } => Change::Status { id, status: "active".into() },
        UserCommand::Remove { id, yes } => {
            if !yes {
                return Err(format!("removing user {id} deletes them and all their clients, meetings and pipeline; add --yes to confirm"));
            }
            Change::Remove { id }
        }
        UserCommand::Signout { id } => Change::SignOut { id },
    };
    users_cmd::change(config, change)
}

fn token(config: &Config, args: TokenArgs) -> Result<(), String> {
    let t = tokens(config)?;
    if args.anon {
        println!("{}", t.anon_key());
        return Ok(());
    }
    let id = args.user.ok_or("give --user ID or --anon")?;
    let conn = store::open_connection(&config.database)?;
    let user = users::get(&conn, id).map_err(|e| e.to_string())?.ok_or_else(|| format!("there is no user {id}"))?;
    if !user.is_active() {
        return Err(format!("user {id} is disabled; enable them first (syncgate user enable {id})"));
    }
    println!("{}", t.user_token(user.id, &user.role, args.ttl.as_secs() as i64));
    Ok(())
}

fn login_link(config: &Config, user_id: i64) -> Result<(), String> {
    let conn = store::open_connection(&config.database)?;
    let user = users::get(&conn, user_id).map_err(|e| e.to_string())?.ok_or_else(|| format!("there is no user {user_id}"))?;
    if !user.is_active() {
        return Err(format!("user {user_id} is disabled; enable them first (syncgate user enable {user_id})"));
    }
    let code = auth::create_login_link(&conn, user_id)?;
    let bind = config.bind_addr()?;
    if bind.port() == 0 && config.server.public_url.trim().is_empty() {
        // The CLI cannot know which port a `serve` on port 0 picked.
        eprintln!("syncgate: server.bind uses port 0, so this link has no real port; set server.public_url to the server's address");
    }
    println!("{}/auth/link?code={code}", config.public_url(bind));
    Ok(())
}

/// SQLite's online backup: a consistent copy of the database as of the moment
/// the copy finishes, taken page by page without stopping the server.
fn backup(config: &Config, to: &std::path::Path) -> Result<(), String> {
    if to.exists() {
        return Err(format!("{} already exists; choose a new file", to.display()));
    }
    let src = store::open_connection(&config.database)?;
    // The copy holds the same secrets as the database: only its owner may read it.
    store::files::create_private_file(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    let mut dst = rusqlite::Connection::open(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    let backup = rusqlite::backup::Backup::new(&src, &mut dst).map_err(|e| format!("cannot start the backup: {e}"))?;
    backup.run_to_completion(256, std::time::Duration::from_millis(5), None).map_err(|e| format!("the backup failed: {e}"))?;
    drop(backup);
    let ok: String = dst.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(|e| e.to_string())?;
    if ok != "ok" {
        return Err(format!("the copy in {} failed its integrity check: {ok}", to.display()));
    }
    println!("{}", to.display());
    Ok(())
}

/// `schema version N (latest M)` and the integrity check's verdict; fails when not ok.
fn check(config: &Config) -> Result<(), String> {
    let path = std::path::Path::new(&config.database.path);
    if !path.exists() {
        return Err(format!("there is no database at {}", path.display()));
    }
    let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let version = store::migrations::version(&conn).map_err(|e| e.to_string())?;
    println!("schema version {version} (this syncgate: {})", store::migrations::latest_version());
    let mut stmt = conn.prepare("PRAGMA integrity_check").map_err(|e| e.to_string())?;
    let problems: Vec<String> = stmt.query_map([], |r| r.get(0)).map_err(|e| e.to_string())?.filter_map(Result::ok).collect();
    if problems == ["ok"] {
        println!("integrity ok");
        Ok(())
    } else {
        for p in &problems {
            println!("{p}");
        }
        Err("the integrity check found problems".into())
    }
}
