//! The ceiling: a minimal tokio-tungstenite broadcast server. A connection to
//! `/trigger` is the writer: every text message it sends is broadcast as is
//! (`Utf8Bytes`, shared, never copied) to every other connection. Any text a
//! subscriber sends (the bench's join) gets one small `phx_reply` frame back.
//! Each subscriber task feeds every frame that is waiting and flushes once,
//! with the same 4 KiB read buffer syncgate uses: this is as little as a
//! tokio-tungstenite server can do per frame.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

const REPLY: &str = r#"["1","1","realtime:bench","phx_reply",{"status":"ok","response":{}}]"#;

/// Serve on 127.0.0.1:0 until killed; prints `raw listening on <addr>` first.
pub fn serve() {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raw server: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("raw server: bind: {e}");
                std::process::exit(1);
            }
        };
        match listener.local_addr() {
            Ok(a) => println!("raw listening on {a}"),
            Err(e) => {
                eprintln!("raw server: {e}");
                std::process::exit(1);
            }
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let (tx, _) = broadcast::channel::<Utf8Bytes>(4096);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection(stream, tx.clone()));
        }
    });
}

pub async fn connection(stream: TcpStream, tx: broadcast::Sender<Utf8Bytes>) {
    let mut cfg = WebSocketConfig::default();
    cfg.read_buffer_size = 4096;
    let trigger = Arc::new(AtomicBool::new(false));
    let t = trigger.clone();
    // The callback's error type is tungstenite's (an HTTP response), not ours.
    #[allow(clippy::result_large_err)]
    let cb = move |req: &Request, res: Response| {
        t.store(req.uri().path() == "/trigger", Ordering::Relaxed);
        Ok(res)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async_with_config(stream, cb, Some(cfg)).await else {
        return;
    };
    if trigger.load(Ordering::Relaxed) {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                let _ = tx.send(t);
            }
        }
        return;
    }
    let mut rx = tx.subscribe();
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(_))) => {
                    if ws.send(Message::text(REPLY)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            r = rx.recv() => {
                let first = match r {
                    Ok(f) => f,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if ws.feed(Message::Text(first)).await.is_err() {
                    return;
                }
                while let Ok(f) = rx.try_recv() {
                    if ws.feed(Message::Text(f)).await.is_err() {
                        return;
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}
