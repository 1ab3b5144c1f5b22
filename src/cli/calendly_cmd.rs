//! `syncgate calendly subscribe|status`: Calendly webhook subscriptions,
//! through [`crate::calendly::api`]. `subscribe` stores the new signing key
//! through the store, so a running server accepts deliveries at once.

use clap::Subcommand;

use crate::calendly::api::{self, CalendlyApiError};
use crate::config::{Config, ExposeSecret};
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum CalendlyCommand {
    /// Subscribe this server to Calendly's invitee events with a fresh signing
    /// key (stored in the database); prints the subscription's URI.
    Subscribe {
        /// A Calendly personal access token (default: calendly.token).
        #[arg(long)]
        token: Option<String>,
        /// The server's public URL (default: server.public_url); the webhook
        /// path is added unless the URL already ends with it.
        #[arg(long)]
        url: Option<String>,
        /// user or organization.
        #[arg(long, default_value = "user")]
        scope: String,
        /// The syncgate user this Calendly account belongs to (default: the
        /// user with the token owner's email, if any).
        #[arg(long)]
        user: Option<i64>,
    },
    /// List the token's webhook subscriptions, one per line, flagging disabled ones.
    Status {
        /// A Calendly personal access token (default: calendly.token).
        #[arg(long)]
        token: Option<String>,
    },
}

pub fn run(config: &Config, cmd: CalendlyCommand) -> Result<(), CalendlyApiError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CalendlyApiError::Usage(format!("cannot start the runtime: {e}")))?;
    let pick = |t: Option<String>| t.unwrap_or_else(|| config.calendly.token.expose_secret().to_string());
    match cmd {
        CalendlyCommand::Subscribe { token, url, scope, user } => {
            let opts = api::SubscribeOptions { token: pick(token), url, scope, user };
            let (sub, notes) = rt.block_on(subscribe(config, opts))?;
            for n in notes {
                eprintln!("{n}");
            }
            println!("{}", sub.uri);
        }
        CalendlyCommand::Status { token } => {
            let (subs, notes) = rt.block_on(api::status(config, &pick(token)))?;
            for n in notes {
                eprintln!("{n}");
            }
            if subs.is_empty() {
                eprintln!("no webhook subscriptions; create one with `syncgate calendly subscribe`");
            }
            for s in &subs {
                println!("{}", api::status_line(s));
            }
        }
    }
    Ok(())
}

/// [`api::subscribe`] on a store of this process's own, closed (its writer
/// drained) before returning.
async fn subscribe(config: &Config, opts: api::SubscribeOptions) -> Result<(api::Subscription, Vec<String>), CalendlyApiError> {
    let opened = Store::open(&config.database).map_err(|e| CalendlyApiError::Usage(e.to_string()))?;
    let result = api::subscribe(config, &opened.store, opts).await;
    opened.store.shutdown_writer().await;
    let writer = opened.writer_thread;
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    result
}
