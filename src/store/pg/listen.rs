//! The node's listener: one direct connection (never pooled: `LISTEN` lives
//! in its session) that listens on the change channel and turns every
//! notification into a wake-up of the change-log tail. Notifications carry
//! nothing and are only a hint: while the listener reconnects they are lost,
//! so after every (re)connect it wakes the tail once, and the tail also
//! reads on its own poll.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{watch, Notify};
use tokio_postgres::AsyncMessage;

use super::tls::{connector, why};
use super::url::PgUrl;
use crate::backoff::Backoff;

/// Waits between reconnects: 100 ms doubling to 5 s, jittered.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// An idle listener asks the server this often whether it is still there,
/// so a connection cut without a FIN is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Listen on `channel` until `shutdown`, waking `wake` for every notification
/// and after every (re)connect; reconnect with backoff when the connection
/// drops.
pub async fn listen(url: PgUrl, channel: &'static str, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let shown = url.to_string();
    let mut failures: u32 = 0;
    loop {
        let ended = tokio::select! {
            ended = session(&url, channel, &wake) => ended,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        // Whatever arrived before the drop may be followed by changes whose
        // notification is lost: read now, and keep reading on the poll.
        wake.notify_one();
        match ended {
            Ok(()) => failures = 0,
            Err(e) => {
                tracing::warn!(database = %shown, error = %e, "the change listener lost its connection; reconnecting (the log is polled meanwhile)");
                failures = failures.saturating_add(1);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT.delay(failures)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Why a listening connection ended. Neither kind quotes the password.
#[derive(Debug, thiserror::Error)]
enum ListenError {
    #[error("{0}")]
    Tls(crate::store::StoreError),
    #[error("{}", why(.0))]
    Database(tokio_postgres::Error),
    #[error("the connection closed")]
    Closed,
}

/// One connection's life: connect, LISTEN, forward notifications until it ends.
async fn session(url: &PgUrl, channel: &str, wake: &Notify) -> Result<(), ListenError> {
    let tls = connector(url).map_err(ListenError::Tls)?;
    let mut config = url.config().clone();
    config.keepalives(true).keepalives_idle(KEEPALIVE);
    let (client, mut connection) = config.connect(tls).await.map_err(ListenError::Database)?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN {channel}");
    let listen = client.batch_execute(&statement);
    tokio::pin!(listen);
    // The connection must be driven while LISTEN waits for its answer.
    loop {
        tokio::select! {
            done = &mut listen => {
                done.map_err(ListenError::Database)?;
                break;
            }
            message = messages.next() => match message {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ListenError::Database(e)),
                None => return Err(ListenError::Closed),
            },
        }
    }
    tracing::info!(channel, "listening for change notifications");
    wake.notify_one();
    let mut ping = tokio::time::interval(KEEPALIVE);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ListenError::Database(e)),
                None => return Ok(()),
            },
            _ = ping.tick() => {
                // A query needs the connection driven too: poll both.
                let check = client.simple_query("");
                tokio::pin!(check);
                loop {
                    tokio::select! {
                        done = &mut check => {
                            done.map_err(ListenError::Database)?;
                            break;
                        }
                        message = messages.next() => match message {
                            Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
                            Some(Ok(_)) => {}
                            Some(Err(e)) => return Err(ListenError::Database(e)),
                            None => return Err(ListenError::Closed),
                        },
                    }
                }
            }
        }
    }
}
