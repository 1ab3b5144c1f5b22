//! The bench client, identical for syncgate and the raw ceiling: a few OS
//! threads, each owning thousands of WebSocket connections on one `mio` poll.
//! It parses server frames by hand (unmasked, unfragmented text frames) and
//! recognises a change by the marker `"name":"w<k>"`, where `k` is the write
//! that caused it. Kept this light so the shared 2 cores go to the servers.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memchr::memmem;
use mio::{Events, Interest, Poll, Token};

/// What every client thread and writer shares in one phase.
pub struct Shared {
    pub base: Instant,
    /// When write `k` was sent, ns after `base` (0: not yet).
    pub sent_at: Vec<AtomicU64>,
    /// How many sockets have received write `k`.
    pub got: Vec<AtomicU32>,
    /// When the first and the last socket received write `k`, ns after `base`.
    pub first_at: Vec<AtomicU64>,
    pub last_at: Vec<AtomicU64>,
    /// Change frames received so far (published by each thread after each poll round).
    pub frames: AtomicU64,
    /// Reads that returned data (frames per read shows how much the server batches its writes).
    pub reads: AtomicU64,
    pub connected: AtomicUsize,
    pub joined: AtomicUsize,
    pub closed: AtomicUsize,
    pub go_join: AtomicBool,
    pub stop: AtomicBool,
    /// Writes numbered below this are warm-up: not in the latency samples.
    pub record_from: usize,
    /// The first change frame seen (the raw server broadcasts copies of it).
    pub sample_frame: Mutex<Option<Vec<u8>>>,
}

impl Shared {
    pub fn new(max_writes: usize, record_from: usize) -> Arc<Shared> {
        Arc::new(Shared {
            base: Instant::now(),
            sent_at: (0..max_writes).map(|_| AtomicU64::new(0)).collect(),
            got: (0..max_writes).map(|_| AtomicU32::new(0)).collect(),
            first_at: (0..max_writes).map(|_| AtomicU64::new(u64::MAX)).collect(),
            last_at: (0..max_writes).map(|_| AtomicU64::new(0)).collect(),
            frames: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            connected: AtomicUsize::new(0),
            joined: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            go_join: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            record_from,
            sample_frame: Mutex::new(None),
        })
    }

    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

/// Where to connect and what to send once connected.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// Request target of the upgrade, e.g. `/realtime/v1/websocket?apikey=…&vsn=2.0.0`.
    pub path: String,
    /// The text of the join message.
    pub join: String,
}

/// A client → server text frame (clients must mask).
pub fn masked_text(text: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0x17, 0xc3, 0x8e];
    let mut f = Vec::with_capacity(text.len() + 14);
    f.push(0x81);
    let n = text.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n <= u16::MAX as usize {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Blocking connect + upgrade; returns the stream and any bytes read past the 101 response.
pub fn connect_ws(addr: SocketAddr, path: &str) -> io::Result<(TcpStream, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the upgrade"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = memmem::find(&buf, b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 101") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                return Err(io::Error::other(format!("upgrade refused: {head}")));
            }
            return Ok((s, buf[end + 4..].to_vec()));
        }
    }
}

struct Conn {
    stream: mio::net::TcpStream,
    leftover: Vec<u8>,
    open: bool,
}

struct Parser {
    marker: memmem::Finder<'static>,
    reply: memmem::Finder<'static>,
}

/// What one thread saw.
#[derive(Default)]
pub struct ThreadResult {
    /// Latency samples in µs, one per (recorded write, socket).
    pub lat_us: Vec<u32>,
    pub errors: Vec<String>,
}

/// Open `n` connections, join when told, then read until `stop`.
pub fn run_thread(shared: Arc<Shared>, target: Target, n: usize) -> ThreadResult {
    let mut res = ThreadResult::default();
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            res.errors.push(format!("poll: {e}"));
            return res;
        }
    };
    let mut conns: Vec<Conn> = Vec::with_capacity(n);
    for i in 0..n {
        let mut tries = 0;
        let (s, leftover) = loop {
            match connect_ws(target.addr, &target.path) {
                Ok(x) => break x,
                Err(e) if tries < 20 => {
                    tries += 1;
                    if tries == 20 {
                        res.errors.push(format!("connect: {e}"));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    res.errors.push(format!("connect gave up: {e}"));
                    return res;
                }
            }
        };
        if let Err(e) = s.set_nonblocking(true) {
            res.errors.push(format!("nonblocking: {e}"));
            return res;
        }
        let mut stream = mio::net::TcpStream::from_std(s);
        if let Err(e) = poll.registry().register(&mut stream, Token(i), Interest::READABLE) {
            res.errors.push(format!("register: {e}"));
            return res;
        }
        conns.push(Conn { stream, leftover, open: true });
        shared.connected.fetch_add(1, Ordering::Relaxed);
    }
    while !shared.go_join.load(Ordering::Acquire) {
        if shared.stop.load(Ordering::Acquire) {
            return res;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let join = masked_text(target.join.as_bytes());
    for c in &mut conns {
        // The socket buffer is empty and the frame small: one write does it.
        if let Err(e) = write_all_nb(&mut c.stream, &join) {
            res.errors.push(format!("join write: {e}"));
        }
    }
    let parser = Parser { marker: memmem::Finder::new(b"\"name\":\"w"), reply: memmem::Finder::new(b"phx_reply") };
    let mut events = Events::with_capacity(4096);
    let mut buf = vec![0u8; 256 * 1024];
    let mut frames_local = 0u64;
    let mut reads_local = 0u64;
    while !shared.stop.load(Ordering::Acquire) {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(20))) {
            if e.kind() != io::ErrorKind::Interrupted {
                res.errors.push(format!("poll: {e}"));
                return res;
            }
        }
        for ev in events.iter() {
            let Some(c) = conns.get_mut(ev.token().0) else {
                continue;
            };
            if !c.open {
                continue;
            }
            read_conn(c, &mut buf, &parser, &shared, &mut res, &mut frames_local, &mut reads_local);
        }
        if frames_local > 0 {
            shared.frames.fetch_add(frames_local, Ordering::Relaxed);
            shared.reads.fetch_add(reads_local, Ordering::Relaxed);
            frames_local = 0;
            reads_local = 0;
        }
    }
    res
}

fn write_all_nb(s: &mut mio::net::TcpStream, mut data: &[u8]) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !data.is_empty() {
        match s.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => std::thread::sleep(Duration::from_micros(200)),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_conn(c: &mut Conn, buf: &mut [u8], p: &Parser, shared: &Shared, res: &mut ThreadResult, frames: &mut u64, reads: &mut u64) {
    loop {
        let start = c.leftover.len();
        if start >= buf.len() / 2 {
            res.errors.push("a frame larger than the read buffer".into());
            c.open = false;
            return;
        }
        buf[..start].copy_from_slice(&c.leftover);
        match c.stream.read(&mut buf[start..]) {
            Ok(0) => {
                c.open = false;
                shared.closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(n) => {
                *reads += 1;
                let now = shared.now_ns();
                let end = start + n;
                let used = parse_frames(&buf[..end], now, p, shared, res, frames, c);
                c.leftover.clear();
                c.leftover.extend_from_slice(&buf[used..end]);
                // A short read drained the socket; edge-triggered poll reports new data.
                if end < buf.len() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                c.open = false;
                shared.closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Handle every complete frame in `data`; returns the bytes consumed.
fn parse_frames(data: &[u8], now: u64, p: &Parser, shared: &Shared, res: &mut ThreadResult, frames: &mut u64, c: &mut Conn) -> usize {
    let mut pos = 0;
    loop {
        let rest = &data[pos..];
        if rest.len() < 2 {
            return pos;
        }
        let opcode = rest[0] & 0x0f;
        let (hdr, len) = match rest[1] & 0x7f {
            126 => {
                if rest.len() < 4 {
                    return pos;
                }
                (4, u16::from_be_bytes([rest[2], rest[3]]) as usize)
            }
            127 => {
                if rest.len() < 10 {
                    return pos;
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&rest[2..10]);
                (10, u64::from_be_bytes(b) as usize)
            }
            n => (2, n as usize),
        };
        if rest.len() < hdr + len {
            return pos;
        }
        let payload = &rest[hdr..hdr + len];
        pos += hdr + len;
        match opcode {
            1 => {
                if let Some(i) = p.marker.find(payload) {
                    let digits = &payload[i + 9..];
                    let mut k = 0usize;
                    for d in digits.iter().take_while(|d| d.is_ascii_digit()) {
                        k = k * 10 + (d - b'0') as usize;
                    }
                    *frames += 1;
                    if let Some(g) = shared.got.get(k) {
                        g.fetch_add(1, Ordering::Relaxed);
                    }
                    if k >= shared.record_from {
                        if let (Some(f), Some(l)) = (shared.first_at.get(k), shared.last_at.get(k)) {
                            f.fetch_min(now, Ordering::Relaxed);
                            l.fetch_max(now, Ordering::Relaxed);
                        }
                        let sent = shared.sent_at.get(k).map(|s| s.load(Ordering::Acquire)).unwrap_or(0);
                        if sent > 0 {
                            res.lat_us.push((now.saturating_sub(sent) / 1000) as u32);
                        }
                    }
                    if k == shared.record_from {
                        if let Ok(mut s) = shared.sample_frame.lock() {
                            if s.is_none() {
                                *s = Some(payload.to_vec());
                            }
                        }
                    }
                } else if p.reply.find(payload).is_some() {
                    shared.joined.fetch_add(1, Ordering::Relaxed);
                }
            }
            8 => {
                c.open = false;
                shared.closed.fetch_add(1, Ordering::Relaxed);
                return pos;
            }
            _ => {}
        }
    }
}
