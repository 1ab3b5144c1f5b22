//! Every value checked before anything binds or opens: a bad one is a
//! sentence naming its key. The server's builder runs this too, so a config
//! built in code is held to the same rules.

use std::path::Path;

use super::{Config, ConfigError};
use crate::duration::Dur;

/// The longest lifetime Graph gives a subscription to Outlook events
/// (minutes; docs/microsoft-graph.md).
const MAX_GRAPH_SUBSCRIPTION_MINUTES: u64 = 10_080;

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.bind_addr()?;
        if !matches!(self.database.synchronous.as_str(), "off" | "normal" | "full" | "extra") {
            return Err(ConfigError::Choice {
                key: "database.synchronous",
                value: self.database.synchronous.clone(),
                hint: "use off, normal, full or extra",
            });
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::Choice { key: "log.format", value: self.log.format.clone(), hint: "use text or json" });
        }
        // tracing-subscriber's parser panics on some non-ASCII text; filters are ASCII anyway.
        if !self.log.level.is_ascii() || tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::Choice {
                key: "log.level",
                value: self.log.level.clone(),
                hint: "write a level like info or a filter like syncgate=debug,info",
            });
        }
        if self.database.path.trim().is_empty() {
            return Err(ConfigError::Empty { key: "database.path", hint: "" });
        }
        if self.database.max_batch == 0 || self.database.read_pool_size == 0 {
            return Err(ConfigError::Zero { key: "database.max_batch and database.read_pool_size" });
        }
        let at_least_one = [
            ("realtime.queue_size", self.realtime.queue_size as u64),
            ("realtime.max_channels_per_socket", self.realtime.max_channels_per_socket as u64),
            ("realtime.max_bindings_per_channel", self.realtime.max_bindings_per_channel as u64),
            ("realtime.max_sockets_per_user", self.realtime.max_sockets_per_user as u64),
            ("realtime.max_bindings_per_user", self.realtime.max_bindings_per_user as u64),
            ("realtime.max_lag", self.realtime.max_lag),
            ("realtime.read_buffer_size", self.realtime.read_buffer_size as u64),
            ("realtime.max_frame_bytes", self.realtime.max_frame_bytes as u64),
            ("server.max_body_bytes", self.server.max_body_bytes as u64),
            ("calendly.max_body_bytes", self.calendly.max_body_bytes as u64),
            ("changes.retention_rows", self.changes.retention_rows),
            ("rest.max_rows", self.rest.max_rows as u64),
            ("microsoft.full_sync_concurrency", self.microsoft.full_sync_concurrency as u64),
            ("microsoft.page_size", self.microsoft.page_size as u64),
            ("rest.max_conditions", self.rest.max_conditions as u64),
            ("rest.max_depth", self.rest.max_depth as u64),
            ("rest.max_in_values", self.rest.max_in_values as u64),
            ("rest.max_query_bytes", self.rest.max_query_bytes as u64),
        ];
        if let Some((key, _)) = at_least_one.into_iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::Zero { key });
        }
        let positive = [
            ("server.shutdown_grace", self.server.shutdown_grace),
            ("auth.token_ttl", self.auth.token_ttl),
            ("auth.user_cache", self.auth.user_cache),
            ("auth.audit_retention", self.auth.audit_retention),
            ("realtime.idle_timeout", self.realtime.idle_timeout),
            ("changes.retention_age", self.changes.retention_age),
            ("changes.prune_interval", self.changes.prune_interval),
            ("cluster.poll_interval", self.cluster.poll_interval),
            ("database.stalled_writer_timeout", self.database.stalled_writer_timeout),
            ("cluster.lease_ttl", self.cluster.lease_ttl),
            ("google.channel_ttl", self.google.channel_ttl),
            ("microsoft.subscription_ttl", self.microsoft.subscription_ttl),
            ("calendly.tolerance", self.calendly.tolerance),
            ("calendly.keep_payloads", self.calendly.keep_payloads),
            ("alerts.check_interval", self.alerts.check_interval),
            ("alerts.calendly_rejected_window", self.alerts.calendly_rejected_window),
            ("alerts.calendly_check_interval", self.alerts.calendly_check_interval),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| value.0.is_zero()) {
            return Err(ConfigError::ZeroDuration { key });
        }
        let others = [
            ("google.renew_before", self.google.renew_before),
            ("google.safety_net_interval", self.google.safety_net_interval),
            ("google.sync_past", self.google.sync_past),
            ("google.sync_future", self.google.sync_future),
            ("microsoft.renew_before", self.microsoft.renew_before),
            ("microsoft.safety_net_interval", self.microsoft.safety_net_interval),
            ("microsoft.sync_past", self.microsoft.sync_past),
            ("microsoft.sync_future", self.microsoft.sync_future),
            ("microsoft.max_retry_wait", self.microsoft.max_retry_wait),
            ("alerts.channel_expiry_warning", self.alerts.channel_expiry_warning),
            ("alerts.silent_push_after", self.alerts.silent_push_after),
        ];
        // Set in code, a duration skips the parser's cap: check it here too.
        if let Some((key, _)) = positive.iter().chain(others.iter()).find(|(_, value)| *value > Dur::MAX) {
            return Err(ConfigError::TooLong { key });
        }
        let id = &self.cluster.node_id;
        if id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            return Err(ConfigError::Choice {
                key: "cluster.node_id",
                value: id.chars().take(80).collect(),
                hint: "use at most 64 letters, digits, dots, dashes and underscores, or leave it empty",
            });
        }
        // Graph refuses to create or extend an event subscription past its
        // maximum lifetime; a longer setting would fail every subscription.
        let graph_max = std::time::Duration::from_secs(MAX_GRAPH_SUBSCRIPTION_MINUTES * 60);
        if self.microsoft.subscription_ttl.0 > graph_max {
            return Err(ConfigError::Choice {
                key: "microsoft.subscription_ttl",
                value: format!("{}m", self.microsoft.subscription_ttl.0.as_secs() / 60),
                hint: "Graph allows at most 10080m (7 days) for Outlook events; the default 4230m is accepted by every Graph version",
            });
        }
        let tenant = &self.microsoft.tenant;
        if tenant.is_empty() || tenant.len() > 64 || !tenant.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.')) {
            return Err(ConfigError::Choice {
                key: "microsoft.tenant",
                value: tenant.chars().take(80).collect(),
                hint: "use organizations, common, or the firm's tenant id (a GUID or its domain)",
            });
        }
        for origin in &self.server.cors_origins {
            if let Some(why) = origin_problem(origin) {
                return Err(ConfigError::Origin { origin: origin.clone(), why });
            }
        }
        let urls = [
            ("server.public_url", &self.server.public_url, true),
            ("google.redirect_url", &self.google.redirect_url, true),
            ("google.webhook_url", &self.google.webhook_url, true),
            ("google.api_base_url", &self.google.api_base_url, false),
            ("google.auth_url", &self.google.auth_url, false),
            ("google.token_url", &self.google.token_url, false),
            ("google.userinfo_url", &self.google.userinfo_url, false),
            ("calendly.api_base_url", &self.calendly.api_base_url, false),
            ("microsoft.redirect_url", &self.microsoft.redirect_url, true),
            ("microsoft.webhook_url", &self.microsoft.webhook_url, true),
            ("microsoft.login_base_url", &self.microsoft.login_base_url, false),
            ("microsoft.graph_base_url", &self.microsoft.graph_base_url, false),
            ("alerts.webhook_url", &self.alerts.webhook_url, true),
        ];
        for (key, value, may_be_empty) in urls {
            if value.trim().is_empty() && may_be_empty {
                continue;
            }
            if let Some(why) = url_problem(value) {
                return Err(ConfigError::Url { key, value: value.clone(), why });
            }
        }
        if self.google.calendar_id.trim().is_empty() {
            return Err(ConfigError::Empty { key: "google.calendar_id", hint: " (use primary for the user's main calendar)" });
        }
        let dir = self.server.static_dir.trim();
        if !dir.is_empty() && !Path::new(dir).is_dir() {
            return Err(ConfigError::NotAFolder { key: "server.static_dir", value: dir.to_string() });
        }
        if self.server.max_connections == 0 {
            return Err(ConfigError::Zero { key: "server.max_connections" });
        }
        if self.realtime.concurrent_replays == 0 {
            return Err(ConfigError::Zero { key: "realtime.concurrent_replays" });
        }
        let timeouts = [
            ("server.header_timeout", self.server.header_timeout),
            ("server.body_timeout", self.server.body_timeout),
            ("realtime.join_timeout", self.realtime.join_timeout),
            ("realtime.flush_timeout", self.realtime.flush_timeout),
        ];
        if let Some((key, _)) = timeouts.into_iter().find(|(_, d)| d.0.is_zero()) {
            return Err(ConfigError::ZeroDuration { key });
        }
        Ok(())
    }
}

/// What keeps `o` from being a browser origin as CORS compares it
/// (`scheme://host[:port]`, http or https, nothing after; or `*`), if anything.
fn origin_problem(o: &str) -> Option<String> {
    if o == "*" {
        return None;
    }
    let example = "write it like https://app.example.com";
    if !o.contains("://") {
        return Some(format!("an origin needs its scheme; {example}"));
    }
    let url = match url::Url::parse(o) {
        Ok(url) => url,
        Err(e) => return Some(format!("not an origin ({e}); {example}")),
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Some(format!("an origin is http:// or https:// and a host; {example}"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Some(format!("an origin has no path, query or user; {example}"));
    }
    // The origin is compared with, and sent back as, a header value: the
    // bytes a header value may hold (visible ASCII, space, tab, obs-text).
    if !o.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f)) {
        return Some(format!("not a valid header value; {example}"));
    }
    None
}

/// What keeps `u` from being an absolute http(s) URL with a host, if anything.
fn url_problem(u: &str) -> Option<String> {
    match url::Url::parse(u.trim()) {
        Err(e) => Some(format!("not a URL ({e}); write it like https://host/path")),
        Ok(url) if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() => {
            Some("write it as an http:// or https:// URL with a host".into())
        }
        Ok(_) => None,
    }
}
