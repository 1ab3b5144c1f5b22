//! Settings: built-in defaults, overridden by `./config.toml` (or `--config
//! PATH`), overridden by `SYNCGATE_<SECTION>__<KEY>` environment variables.
//! Unknown keys warn and never stop startup; bad values stop it with a
//! sentence naming the key. Secrets are [`SecretString`]s: their `Debug`
//! never prints them, and a reader calls `expose_secret()` where one is used.
//!
//! This module knows nothing of HTTP or the server it configures.
//! - `load`: the layering (defaults → file → environment) and its warnings.
//! - `validate`: every value checked before anything binds or opens.
//! - `secret`: the JWT secret, configured or generated once into the data folder.
//! - `files`: the data folder's private files (0700 folder, 0600 files).

use std::net::SocketAddr;
use std::path::PathBuf;

pub use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

use crate::duration::Dur;

mod error;
pub mod files;
mod load;
pub mod secret;
mod validate;

pub use error::ConfigError;
pub use load::{Loaded, ENV_PREFIX};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub realtime: RealtimeConfig,
    pub changes: ChangesConfig,
    pub google: GoogleConfig,
    pub microsoft: MicrosoftConfig,
    pub calendly: CalendlyConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub alerts: AlertsConfig,
    pub cluster: ClusterConfig,
    pub rest: RestConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub bind: String,
    /// The address browsers and webhook senders use; empty means `http://<bind>`.
    pub public_url: String,
    /// Origins allowed to call the REST API and open the realtime socket.
    pub cors_origins: Vec<String>,
    /// Serve the web UI from this folder instead of the copy embedded in the binary.
    pub static_dir: String,
    /// How long a shutdown waits for open requests and sockets, and then for
    /// background tasks (Google syncs and renewals, retention, alerts) to end.
    pub shutdown_grace: Dur,
    /// A connection whose request head has not fully arrived within this is closed.
    pub header_timeout: Dur,
    /// A request body that sends nothing for this long is answered 408.
    pub body_timeout: Dur,
    /// Most open connections (realtime sockets included); more wait in the accept queue.
    pub max_connections: usize,
    /// Largest REST request body, in bytes (with or without a Content-Length); more is 413.
    pub max_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8080".into(),
            public_url: String::new(),
            cors_origins: vec![],
            static_dir: String::new(),
            shutdown_grace: Dur::secs(10),
            header_timeout: Dur::secs(10),
            body_timeout: Dur::secs(30),
            max_connections: 10_000,
            max_body_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// PostgreSQL instead of SQLite: `postgres://user:pass@host:5432/db`
    /// (`?sslmode=disable|prefer|require|verify-full`, `sslrootcert=`, or a
    /// Unix-socket `host=/run/postgresql`). Empty: the SQLite file at `path`.
    #[serde(serialize_with = "expose")]
    pub url: SecretString,
    /// How long connecting to PostgreSQL, or waiting for a pooled connection, may take.
    pub connect_timeout: Dur,
    /// A direct connection for `LISTEN` (the change-log wake-up), when `url`
    /// goes through a transaction-mode pooler that cannot hold one. Empty: `url`.
    #[serde(serialize_with = "expose")]
    pub listen_url: SecretString,
    /// PostgreSQL ends a writer session that sits this long inside a
    /// transaction (its node paused or cut off mid-batch), releasing the row
    /// locks the other nodes' writers wait on.
    pub stalled_writer_timeout: Dur,
    pub path: String,
    /// SQLite `synchronous`: off | normal | full | extra.
    pub synchronous: String,
    pub read_pool_size: u32,
    /// Most write requests committed in one transaction.
    pub max_batch: usize,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: SecretString::default(),
            connect_timeout: Dur::secs(5),
            listen_url: SecretString::default(),
            stalled_writer_timeout: Dur::secs(5),
            path: "data/syncgate.db".into(),
            synchronous: "full".into(),
            read_pool_size: 8,
            max_batch: 256,
        }
    }
}

/// Several nodes on one PostgreSQL database (see `cluster`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// This node's name in `/api/admin/health` and on `/metrics`. Empty: the
    /// host name and a random suffix, new on every start.
    pub node_id: String,
    /// The change log is read at least this often, even when no
    /// notification arrives (notifications are lost while the listener reconnects).
    pub poll_interval: Dur,
    /// A lease (work that must run on one node) moves to another node this
    /// long after its holder stopped renewing it; leases and heartbeats are
    /// renewed every third of it.
    pub lease_ttl: Dur,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { node_id: String::new(), poll_interval: Dur::secs(1), lease_ttl: Dur::secs(15) }
    }
}

/// Supabase's data API at `/rest/v1` (PostgREST's dialect): what one request may ask for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RestConfig {
    /// Most rows one answer holds, and most rows one PATCH or DELETE may
    /// change (PostgREST's `db-max-rows`); a larger `limit` is cut to it.
    pub max_rows: usize,
    /// Most conditions in one request's filters and `or`/`and` trees together.
    pub max_conditions: usize,
    /// Deepest nesting of `or(…)`/`and(…)`.
    pub max_depth: usize,
    /// Most values in one `in.(…)`.
    pub max_in_values: usize,
    /// Longest query string, in bytes.
    pub max_query_bytes: usize,
}

impl Default for RestConfig {
    fn default() -> Self {
        RestConfig { max_rows: 1000, max_conditions: 64, max_depth: 8, max_in_values: 500, max_query_bytes: 16 * 1024 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// HS256 key. Empty on a loopback bind: generated once into the data folder.
    #[serde(serialize_with = "expose")]
    pub jwt_secret: SecretString,
    /// Lifetime of the tokens syncgate issues at sign-in.
    pub token_ttl: Dur,
    pub allowed_emails: Vec<String>,
    pub allowed_domains: Vec<String>,
    /// How long a user's stored state (exists, active, role, signed out
    /// everywhere) is trusted before REST and realtime read it again: an
    /// account change reaches open sockets within this (immediately when made
    /// through the server).
    pub user_cache: Dur,
    /// How long the account audit log is kept.
    pub audit_retention: Dur,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: SecretString::default(),
            token_ttl: Dur::secs(86_400),
            allowed_emails: vec![],
            allowed_domains: vec![],
            user_cache: Dur::secs(10),
            audit_retention: Dur::secs(365 * 86_400),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RealtimeConfig {
    pub max_channels_per_socket: usize,
    pub max_bindings_per_channel: usize,
    pub max_sockets_per_user: usize,
    pub max_bindings_per_user: usize,
    /// Recent changes kept in memory for sessions to read; a session further
    /// behind catches up from the change log instead (nothing is lost).
    pub queue_size: usize,
    /// Changes a session may fall behind the head before it is closed (4008).
    pub max_lag: u64,
    /// A socket that sends nothing for this long is closed.
    pub idle_timeout: Dur,
    /// Read buffer per socket; small keeps idle sockets cheap.
    pub read_buffer_size: usize,
    /// A socket that has joined no channel for this long is closed.
    pub join_timeout: Dur,
    /// Most sockets open without a joined channel; past it the upgrade gets 503.
    pub max_unjoined: usize,
    /// Most rows a snapshot at join may send; past it the join is refused
    /// and the client pages through REST instead.
    pub snapshot_max_rows: usize,
    /// Snapshots and log replays read at once (the rest wait their turn).
    pub concurrent_replays: usize,
    /// A page of a snapshot or replay the client does not take within this
    /// ends the socket as a slow consumer (and releases its read transaction).
    pub flush_timeout: Dur,
    /// Largest realtime message (and frame) a client may send, in bytes; more closes the socket.
    pub max_frame_bytes: usize,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            max_channels_per_socket: 100,
            max_bindings_per_channel: 100,
            max_sockets_per_user: 100,
            max_bindings_per_user: 1000,
            queue_size: 4096,
            max_lag: 100_000,
            idle_timeout: Dur::secs(60),
            read_buffer_size: 4096,
            max_frame_bytes: 256 * 1024,
            join_timeout: Dur::secs(30),
            max_unjoined: 1000,
            snapshot_max_rows: 10_000,
            concurrent_replays: 16,
            flush_timeout: Dur::secs(15),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ChangesConfig {
    /// Changes older than this are pruned from the log (resume from before it gets `gap`).
    pub retention_age: Dur,
    /// At most this many changes are kept.
    pub retention_rows: u64,
    pub prune_interval: Dur,
}

impl Default for ChangesConfig {
    fn default() -> Self {
        ChangesConfig { retention_age: Dur::secs(7 * 86_400), retention_rows: 1_000_000, prune_interval: Dur::secs(60) }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GoogleConfig {
    pub client_id: String,
    #[serde(serialize_with = "expose")]
    pub client_secret: SecretString,
    pub redirect_url: String,
    pub webhook_url: String,
    pub api_base_url: String,
    pub auth_url: String,
    pub token_url: String,
    pub userinfo_url: String,
    /// The one-calendar form of `calendars`, still honoured: used when `calendars` is empty.
    pub calendar_id: String,
    /// The calendars synced for a user who has not chosen (`primary` is the
    /// calendar-list entry with `primary: true`). Empty: `[calendar_id]`.
    pub calendars: Vec<String>,
    /// Most calendars one user may tick.
    pub max_calendars: usize,
    /// Most full syncs (whole window listings) running at once, so an
    /// upgrade or a burst of expired sync tokens is worked through in turn.
    pub full_sync_concurrency: usize,
    /// The window's end moves forward with time: once it is this far behind
    /// `now + sync_future`, the next pass lists the new slice (occurrences of
    /// endless series that entered the window appear without a push).
    pub window_step: Dur,
    pub channel_ttl: Dur,
    pub renew_before: Dur,
    pub safety_net_interval: Dur,
    pub sync_past: Dur,
    pub sync_future: Dur,
}

/// Microsoft 365 / Outlook calendars through Microsoft Graph (see
/// `docs/microsoft-graph.md`). Off until `client_id` and `client_secret` are set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MicrosoftConfig {
    /// The app registration's Application (client) id.
    pub client_id: String,
    #[serde(serialize_with = "expose")]
    pub client_secret: SecretString,
    /// Whose accounts may connect: `organizations` (any work or school
    /// account), `common`, or the firm's tenant id (only the firm's).
    pub tenant: String,
    /// Empty: `<public_url>/api/auth/microsoft/callback`.
    pub redirect_url: String,
    /// Empty: `<public_url>/api/microsoft/webhook` (Graph requires https).
    pub webhook_url: String,
    /// The identity platform, `{tenant}/oauth2/v2.0/authorize|token` under it.
    pub login_base_url: String,
    /// Graph, `me/…` and `subscriptions` under it.
    pub graph_base_url: String,
    /// The calendars synced for a user who has not chosen (`primary` is the
    /// user's default calendar).
    pub calendars: Vec<String>,
    /// Most full syncs (whole window) running at once.
    pub full_sync_concurrency: usize,
    /// Lifetime asked for each subscription (Graph caps Outlook event
    /// subscriptions at under 7 days), and how long before expiry it is extended.
    pub subscription_ttl: Dur,
    pub renew_before: Dur,
    /// An incremental (delta) sync per connected user this often, staggered; `0s` turns it off.
    pub safety_net_interval: Dur,
    /// The window of a full sync: this far back and this far ahead.
    pub sync_past: Dur,
    pub sync_future: Dur,
    /// Events per delta page asked for (`Prefer: odata.maxpagesize`).
    pub page_size: usize,
    /// The longest `Retry-After` waited out inside one Graph call; a longer
    /// one ends the call, and the sync or renewal comes back after it.
    pub max_retry_wait: Dur,
}

impl Default for MicrosoftConfig {
    fn default() -> Self {
        MicrosoftConfig {
            client_id: String::new(),
            client_secret: SecretString::default(),
            tenant: "organizations".into(),
            redirect_url: String::new(),
            webhook_url: String::new(),
            login_base_url: "https://login.microsoftonline.com".into(),
            graph_base_url: "https://graph.microsoft.com/v1.0".into(),
            calendars: vec!["primary".into()],
            full_sync_concurrency: 2,
            subscription_ttl: Dur::secs(4230 * 60),
            renew_before: Dur::secs(86_400),
            safety_net_interval: Dur::secs(6 * 3600),
            sync_past: Dur::secs(30 * 86_400),
            sync_future: Dur::secs(365 * 86_400),
            page_size: 100,
            max_retry_wait: Dur::secs(30),
        }
    }
}

impl Default for GoogleConfig {
    fn default() -> Self {
        GoogleConfig {
            client_id: String::new(),
            client_secret: SecretString::default(),
            redirect_url: String::new(),
            webhook_url: String::new(),
            api_base_url: "https://www.googleapis.com/calendar/v3".into(),
            auth_url: "https://accounts.google.com/o/oauth2/v2/auth".into(),
            token_url: "https://oauth2.googleapis.com/token".into(),
            userinfo_url: "https://openidconnect.googleapis.com/v1/userinfo".into(),
            calendar_id: "primary".into(),
            calendars: vec![],
            max_calendars: 10,
            full_sync_concurrency: 2,
            window_step: Dur::secs(86_400),
            channel_ttl: Dur::secs(7 * 86_400),
            renew_before: Dur::secs(86_400),
            safety_net_interval: Dur::secs(6 * 3600),
            sync_past: Dur::secs(30 * 86_400),
            sync_future: Dur::secs(365 * 86_400),
        }
    }
}

impl GoogleConfig {
    /// The calendars a user who has not chosen syncs: `calendars`, else
    /// `[calendar_id]`; blanks dropped, each named once.
    pub fn default_calendars(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let listed =
            if self.calendars.iter().any(|c| !c.trim().is_empty()) { self.calendars.clone() } else { vec![self.calendar_id.clone()] };
        for c in listed {
            let c = c.trim().to_string();
            if !c.is_empty() && !out.iter().any(|o| o.eq_ignore_ascii_case(&c)) {
                out.push(c);
            }
        }
        if out.is_empty() {
            out.push("primary".into());
        }
        out
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CalendlyConfig {
    #[serde(serialize_with = "expose_all")]
    pub signing_keys: Vec<SecretString>,
    pub tolerance: Dur,
    pub api_base_url: String,
    /// Personal access token used to check subscription state (optional).
    #[serde(serialize_with = "expose")]
    pub token: SecretString,
    pub keep_payloads: Dur,
    /// Delivery outcome rows (and the per-minute rejection counts) are deleted after this.
    pub keep_outcomes: Dur,
    /// Largest Calendly delivery body, in bytes; more is 413 (counted as a refusal).
    pub max_body_bytes: usize,
}

impl Default for CalendlyConfig {
    fn default() -> Self {
        CalendlyConfig {
            signing_keys: vec![],
            tolerance: Dur::secs(180),
            api_base_url: "https://api.calendly.com".into(),
            token: SecretString::default(),
            keep_payloads: Dur::secs(30 * 86_400),
            keep_outcomes: Dur::secs(90 * 86_400),
            max_body_bytes: 256 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// text | json
    pub format: String,
    /// A tracing filter, e.g. `info` or `syncgate=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: "text".into(), level: "info".into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct MetricsConfig {
    /// When set, `/metrics` requires `Authorization: Bearer <token>`.
    #[serde(serialize_with = "expose")]
    pub token: SecretString,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AlertsConfig {
    pub webhook_url: String,
    pub check_interval: Dur,
    pub channel_expiry_warning: Dur,
    pub silent_push_after: Dur,
    pub calendly_rejected_threshold: u64,
    /// The window the rejected deliveries are counted over.
    pub calendly_rejected_window: Dur,
    /// How often Calendly's subscriptions are checked (needs calendly.token).
    pub calendly_check_interval: Dur,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook_url: String::new(),
            check_interval: Dur::secs(60),
            channel_expiry_warning: Dur::secs(3600),
            silent_push_after: Dur::secs(86_400),
            calendly_rejected_threshold: 10,
            calendly_rejected_window: Dur::secs(3600),
            calendly_check_interval: Dur::secs(900),
        }
    }
}

impl Config {
    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.bind.parse().map_err(|_| ConfigError::Choice {
            key: "server.bind",
            value: self.server.bind.clone(),
            hint: "write it as IP:PORT, e.g. 127.0.0.1:8080",
        })
    }

    pub fn database_path(&self) -> PathBuf {
        PathBuf::from(&self.database.path)
    }

    /// The folder that holds the database, the generated secret and backups.
    pub fn data_dir(&self) -> PathBuf {
        match self.database_path().parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// `server.public_url`, or `http://<bound address>` when unset.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        if self.server.public_url.trim().is_empty() {
            format!("http://{bound}")
        } else {
            self.server.public_url.trim_end_matches('/').to_string()
        }
    }

    pub fn microsoft_enabled(&self) -> bool {
        !self.microsoft.client_id.is_empty() && !self.microsoft.client_secret.expose_secret().is_empty()
    }

    pub fn google_enabled(&self) -> bool {
        !self.google.client_id.is_empty() && !self.google.client_secret.expose_secret().is_empty()
    }
}

/// A secret serializes as its text: the loader merges into the defaults as a
/// TOML tree, and the shipped `config.toml` is compared with it.
fn expose<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

fn expose_all<S: Serializer>(secrets: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(secrets.iter().map(|k| k.expose_secret()))
}

/// The secrets of a list setting that are not blank, trimmed.
pub fn present(secrets: &[SecretString]) -> impl Iterator<Item = &str> {
    secrets.iter().map(|k| k.expose_secret().trim()).filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn secrets_never_print() {
        let mut c = Config::default();
        c.auth.jwt_secret = "jwt-secret-that-must-not-print-0123".into();
        c.google.client_secret = "google-secret-that-must-not-print".into();
        c.calendly.signing_keys = vec!["signing-key-that-must-not-print".into()];
        c.calendly.token = "calendly-token-that-must-not-print".into();
        c.metrics.token = "metrics-token-that-must-not-print".into();
        let shown = format!("{c:?}");
        assert!(!shown.contains("must-not-print"), "{shown}");
    }

    #[test]
    fn defaults_without_any_file() {
        let l = Config::load_from(None, vec![], Path::new("/nonexistent/config.toml")).unwrap();
        assert_eq!(l.config.server.bind, "127.0.0.1:8080");
        assert_eq!(l.config.database.path, "data/syncgate.db");
        assert_eq!(l.config.calendly.tolerance, Dur::secs(180));
    }

    #[test]
    fn env_beats_file_and_lists_split_on_commas() {
        let dir = std::env::temp_dir().join(format!("sg-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "[server]\nbind = \"127.0.0.1:9000\"\n[realtime]\nqueue_size = 7\nbogus = 1\n").unwrap();
        let l = Config::load_from(
            Some(&f),
            env(&[
                ("SYNCGATE_SERVER__BIND", "127.0.0.1:9100"),
                ("SYNCGATE_CALENDLY__SIGNING_KEYS", "a, b"),
                ("SYNCGATE_CALENDLY__TOLERANCE", "5m"),
            ]),
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(l.config.server.bind, "127.0.0.1:9100");
        assert_eq!(l.config.realtime.queue_size, 7);
        assert_eq!(present(&l.config.calendly.signing_keys).collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(l.config.calendly.tolerance, Dur::secs(300));
        assert!(l.warnings.iter().any(|w| w.contains("realtime.bogus")));
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = Config::load_from(None, env(&[("SYNCGATE_REALTIME__QUEUE_SIZE", "many")]), Path::new("/x")).unwrap_err().to_string();
        assert!(e.contains("realtime.queue_size"), "{e}");
        let e = Config::load_from(None, env(&[("SYNCGATE_AUTH__TOKEN_TTL", "forever")]), Path::new("/x")).unwrap_err().to_string();
        assert!(e.contains("forever"), "{e}");
        for (var, key) in [
            ("SYNCGATE_SERVER__CORS_ORIGINS", "server.cors_origins"),
            ("SYNCGATE_SERVER__PUBLIC_URL", "server.public_url"),
            ("SYNCGATE_GOOGLE__TOKEN_URL", "google.token_url"),
            ("SYNCGATE_ALERTS__WEBHOOK_URL", "alerts.webhook_url"),
        ] {
            let e = Config::load_from(None, env(&[(var, "app.example.com")]), Path::new("/x")).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        let e = Config::load_from(None, env(&[("SYNCGATE_CHANGES__PRUNE_INTERVAL", "0s")]), Path::new("/x")).unwrap_err().to_string();
        assert!(e.contains("changes.prune_interval"), "{e}");
        let e = Config::load_from(None, env(&[("SYNCGATE_LOG__LEVEL", "syncgate=loud")]), Path::new("/x")).unwrap_err().to_string();
        assert!(e.contains("log.level"), "{e}");
        // Found by the property tests: this used to panic inside tracing-subscriber.
        let e = Config::load_from(None, env(&[("SYNCGATE_LOG__LEVEL", "\ta\u{a1}=")]), Path::new("/x")).unwrap_err().to_string();
        assert!(e.contains("log.level"), "{e}");
    }
}

#[cfg(test)]
mod shipped_file {
    use super::*;
    use std::path::Path;

    /// The shipped `config.toml` documents every setting at its default: loading
    /// it must give exactly the defaults and no warnings.
    #[test]
    fn config_toml_lists_every_key_at_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let loaded = Config::load_from(Some(&path), vec![], Path::new("/nonexistent")).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let from_file = toml::Value::try_from(&loaded.config).unwrap();
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        assert_eq!(from_file, defaults);
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml::Table = text.parse().unwrap();
        let defaults = defaults.as_table().unwrap();
        for (section, keys) in defaults {
            let in_file = table.get(section).and_then(|s| s.as_table()).unwrap_or_else(|| panic!("config.toml lacks [{section}]"));
            for key in keys.as_table().unwrap().keys() {
                assert!(in_file.contains_key(key), "config.toml lacks {section}.{key}");
            }
        }
    }
}
