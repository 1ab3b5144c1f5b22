//! Limits on one HTTP request that hyper does not enforce itself: a request
//! body that stops arriving for `server.body_timeout` ends with an error the
//! server answers with 408, so a client that announces a body and never
//! sends it cannot hold a connection and a handler forever. (The head's own
//! limit, `server.header_timeout`, is hyper's timer; the connection cap is
//! the accept loop's semaphore in `server`.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Why a body ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body stopped arriving")]
    Stalled,
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
}

/// A request body that fails once no bytes arrived for `idle`, and says so
/// through `stalled` (read by the server after the handler answered).
pub struct TimedBody {
    inner: Incoming,
    idle: Duration,
    /// Started only when the body first has to wait: most bodies are already
    /// buffered when the handler reads them, and pay for no timer.
    deadline: Option<Pin<Box<Sleep>>>,
    stalled: Arc<AtomicBool>,
}

impl TimedBody {
    pub fn new(inner: Incoming, idle: Duration) -> (TimedBody, Arc<AtomicBool>) {
        let stalled = Arc::new(AtomicBool::new(false));
        (TimedBody { inner, idle, deadline: None, stalled: stalled.clone() }, stalled)
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(d) = this.deadline.as_mut() {
                    d.as_mut().reset(Instant::now() + this.idle);
                }
                Poll::Ready(frame.map(|r| r.map_err(BodyError::from)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if deadline.as_mut().poll(cx).is_ready() {
                    this.stalled.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(BodyError::Stalled)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
