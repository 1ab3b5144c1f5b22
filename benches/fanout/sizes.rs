//! `-- --sizes`: the in-memory sizes behind the per-socket memory breakdown
//! (futures are measured unpolled: a task allocates its whole future up front).

use std::mem::{size_of, size_of_val};
use std::sync::Arc;

use syncgate::realtime::channel::{Binding, Channel};
use syncgate::realtime::fanout::Published;
use syncgate::realtime::hub::{Hub, SocketShared};
use syncgate::realtime::{protocol::Vsn, session};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

pub fn print() -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let db = syncgate::config::DatabaseConfig { path: dir.path().join("s.db").to_string_lossy().into_owned(), ..Default::default() };
        let opened = syncgate::store::Store::open(&db).map_err(|e| e.to_string())?;
        let tokens = syncgate::auth::Tokens::new("fanout-sizes-secret-0123456789abcdef");
        let claims = tokens.verify(&tokens.user_token(1, "user", 60)).map_err(|e| e.to_string())?;
        let identities = Arc::new(syncgate::auth::identity::Identities::new(opened.store.clone(), std::time::Duration::from_secs(10)));
        let hub = Hub::new(syncgate::store::LogHead::new(0), 4096);
        let unjoined = syncgate::realtime::UnjoinedSlot::take(&hub, usize::MAX).ok_or("no unjoined slot")?;
        let ctx = session::SessionCtx { hub, store: opened.store, tokens, identities, cfg: Default::default() };
        let (a, _b) = tokio::io::duplex(64);
        let ws = WebSocketStream::from_raw_socket(a, Role::Server, Some(WebSocketConfig::default())).await;
        println!("WebSocketStream<DuplexStream>: {} B (its 4 KiB read buffer and write buffer are separate)", size_of_val(&ws));
        let fut = session::run(ws, ctx, Vsn::V2, claims, unjoined);
        println!("session::run future (one per socket, inside its tokio task): {} B", size_of_val(&fut));
        drop(fut);
        println!("SessionCtx: {} B", size_of::<session::SessionCtx>());
        println!("SocketShared (Arc'd): {} B", size_of::<SocketShared>());
        println!("Channel: {} B, Binding: {} B", size_of::<Channel>(), size_of::<Binding>());
        println!("Published (one per change in the shared window, not per socket): {} B", size_of::<Published>());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let s = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (tx, _) = tokio::sync::broadcast::channel(16);
        let raw = super::raw_broadcast::connection(s, tx);
        println!("raw server connection future: {} B", size_of_val(&raw));
        Ok(())
    })
}
