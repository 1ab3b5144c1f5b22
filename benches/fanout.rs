//! Realtime fanout benchmark: syncgate (the release binary, as a child
//! process) next to a minimal tokio-tungstenite broadcast server (this binary
//! with `--raw-server`), driven by the same client in the same run.
//!
//! (a) latency from a write (REST POST for syncgate, a trigger message for
//!     the raw server) to each subscribed socket's frame, at a fixed rate;
//! (b) delivered frames/s and server CPU per frame at 10,000 sockets, with a
//!     window of writes in flight so the server is saturated but no queue overflows;
//! (c) resident memory per idle joined socket at 10,000 sockets.
//!
//! Run: `cargo bench --bench fanout` (results in BENCHMARKS.md). Knobs, as
//! environment variables: FANOUT_RATE (writes/s in (a), 200), FANOUT_SECS (10),
//! FANOUT_WARM (2), FANOUT_SOCKETS_A (1000), FANOUT_SOCKETS_B (10000),
//! FANOUT_WINDOW (writes in flight in (b), 8), FANOUT_CLIENT_THREADS (2),
//! FANOUT_WRITERS (4), FANOUT_ONLY (syncgate | raw). `-- --memory` measures
//! only (c), `-- --sizes` prints the in-memory sizes behind it; SYNCGATE_* variables reach the syncgate child (e.g.
//! SYNCGATE_REALTIME__READ_BUFFER_SIZE for the memory breakdown).

mod fanout {
    pub mod client;
    pub mod procs;
    pub mod raw_broadcast;
    pub mod sizes;
}

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use fanout::client::{self, Shared};
use fanout::procs::{Kind, ServerProc};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Knobs {
    rate: usize,
    secs: usize,
    warm: usize,
    sockets_a: usize,
    sockets_b: usize,
    window: usize,
    client_threads: usize,
    writers: usize,
}

fn raise_fd_limit() {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc calls on a stack struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// The client threads of one phase.
struct Clients {
    shared: Arc<Shared>,
    handles: Vec<thread::JoinHandle<client::ThreadResult>>,
    sockets: usize,
}

impl Clients {
    fn connect(server: &ServerProc, shared: Arc<Shared>, sockets: usize, threads: usize) -> Result<Clients, String> {
        let target = server.target();
        let handles = (0..threads)
            .map(|t| {
                let n = sockets / threads + usize::from(t < sockets % threads);
                let (sh, tg) = (shared.clone(), target.clone());
                thread::spawn(move || client::run_thread(sh, tg, n))
            })
            .collect();
        let c = Clients { shared, handles, sockets };
        let sh = c.shared.clone();
        wait_for("connections", 120, || sh.connected.load(Ordering::Relaxed) >= sockets || c.handles.iter().any(|h| h.is_finished()))?;
        if sh.connected.load(Ordering::Relaxed) < sockets {
            return Err(format!("only {} of {sockets} sockets connected", sh.connected.load(Ordering::Relaxed)));
        }
        Ok(c)
    }

    fn join(&self) -> Result<(), String> {
        self.shared.go_join.store(true, Ordering::Release);
        let sh = self.shared.clone();
        let n = self.sockets;
        wait_for("join replies", 120, || sh.joined.load(Ordering::Relaxed) >= n)
    }

    fn finish(self) -> client::ThreadResult {
        self.shared.stop.store(true, Ordering::Release);
        let mut all = client::ThreadResult::default();
        for h in self.handles {
            if let Ok(mut r) = h.join() {
                all.lat_us.append(&mut r.lat_us);
                all.errors.append(&mut r.errors);
            }
        }
        all
    }
}

struct Latency {
    writes: usize,
    rate: f64,
    samples: usize,
    missing: i64,
    p50: u32,
    p99: u32,
    max: u32,
    cpu_per_frame_us: f64,
}

/// (a): `rate` writes/s for warm + secs seconds to `sockets` sockets.
fn latency(server: &ServerProc, k: &Knobs, sample: Option<&[u8]>) -> Result<(Latency, Option<Vec<u8>>), String> {
    let total = k.rate * (k.warm + k.secs);
    let record_from = k.rate * k.warm;
    let shared = Shared::new(total, record_from);
    let clients = Clients::connect(server, shared.clone(), k.sockets_a, k.client_threads)?;
    clients.join()?;
    thread::sleep(Duration::from_millis(300));
    let cpu0 = server.cpu_secs();
    let frames0 = shared.frames.load(Ordering::Relaxed);
    let start = Instant::now();
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let writers: Vec<_> = (0..k.writers)
        .map(|j| {
            let mut w = server.writer(sample)?;
            let (sh, errs, rate, nw) = (shared.clone(), errors.clone(), k.rate as f64, k.writers);
            Ok(thread::spawn(move || {
                let mut i = j;
                while i < total {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    let now = Instant::now();
                    if due > now {
                        thread::sleep(due - now);
                    }
                    sh.sent_at[i].store(sh.now_ns().max(1), Ordering::Release);
                    if let Err(e) = w.write(i) {
                        errs.lock().map(|mut v| v.push(e)).ok();
                        return;
                    }
                    i += nw;
                }
            }))
        })
        .collect::<Result<_, String>>()?;
    for w in writers {
        let _ = w.join();
    }
    let sent_secs = start.elapsed().as_secs_f64();
    let n = k.sockets_a as u32;
    let _ = wait_for("the last frames", 10, || shared.got.iter().all(|g| g.load(Ordering::Relaxed) >= n));
    let cpu = server.cpu_secs() - cpu0;
    let frames = shared.frames.load(Ordering::Relaxed) - frames0;
    let sample_frame = shared.sample_frame.lock().ok().and_then(|s| s.clone());
    let mut res = clients.finish();
    if let Ok(e) = errors.lock() {
        res.errors.extend(e.iter().cloned());
    }
    if let Some(e) = res.errors.first() {
        eprintln!("  {} errors, first: {e}", res.errors.len());
    }
    let s = &mut res.lat_us;
    s.sort_unstable();
    let pick = |q: f64| s.get(((s.len() as f64 * q) as usize).min(s.len().saturating_sub(1))).copied().unwrap_or(0);
    let expected = ((total - record_from) * k.sockets_a) as i64;
    Ok((
        Latency {
            writes: total,
            rate: total as f64 / sent_secs,
            samples: s.len(),
            missing: expected - s.len() as i64,
            p50: pick(0.50),
            p99: pick(0.99),
            max: s.last().copied().unwrap_or(0),
            cpu_per_frame_us: cpu * 1e6 / frames.max(1) as f64,
        },
        sample_frame,
    ))
}

struct Throughput {
    rss_start_kib: u64,
    rss_connected_kib: u64,
    rss_joined_kib: u64,
    rss_after_kib: u64,
    frames_per_sec: f64,
    cpu_per_frame_us: f64,
    cpu_util: f64,
    client_util: f64,
    stalls: usize,
    writes: usize,
}

/// (c) then (b): connect and join `sockets_b` sockets, read RSS, then keep
/// `window` writes in flight (write k goes once every socket has write k - window).
fn throughput(server: &ServerProc, k: &Knobs, sample: Option<&[u8]>, memory_only: bool) -> Result<Throughput, String> {
    const MAX_WRITES: usize = 200_000;
    let shared = Shared::new(MAX_WRITES, usize::MAX);
    thread::sleep(Duration::from_millis(300));
    let rss_start_kib = server.rss_kib();
    let clients = Clients::connect(server, shared.clone(), k.sockets_b, k.client_threads)?;
    thread::sleep(Duration::from_millis(500));
    let rss_connected_kib = server.rss_kib();
    clients.join()?;
    thread::sleep(Duration::from_millis(1000));
    let rss_joined_kib = server.rss_kib();
    let mut t = Throughput {
        rss_start_kib,
        rss_connected_kib,
        rss_joined_kib,
        rss_after_kib: 0,
        frames_per_sec: 0.0,
        cpu_per_frame_us: 0.0,
        cpu_util: 0.0,
        client_util: 0.0,
        stalls: 0,
        writes: 0,
    };
    if memory_only {
        let res = clients.finish();
        if let Some(e) = res.errors.first() {
            eprintln!("  {} errors, first: {e}", res.errors.len());
        }
        return Ok(t);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let stalls = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let n = k.sockets_b as u32;
    let writers: Vec<_> = (0..k.writers)
        .map(|_| {
            let mut w = server.writer(sample)?;
            let (sh, next, stalls, stop, window) = (shared.clone(), next.clone(), stalls.clone(), stop.clone(), k.window);
            Ok(thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= MAX_WRITES {
                        return;
                    }
                    if i >= window {
                        let waited = Instant::now();
                        while sh.got[i - window].load(Ordering::Relaxed) < n && !stop.load(Ordering::Relaxed) {
                            if waited.elapsed() > Duration::from_secs(2) {
                                stalls.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            thread::sleep(Duration::from_micros(50));
                        }
                    }
                    sh.sent_at[i].store(sh.now_ns().max(1), Ordering::Release);
                    if let Err(e) = w.write(i) {
                        eprintln!("  write {i}: {e}");
                        return;
                    }
                }
            }))
        })
        .collect::<Result<_, String>>()?;
    thread::sleep(Duration::from_secs(k.warm as u64));
    // A marker for profiling scripts: the measured window starts now.
    println!("    measuring {} s", k.secs);
    let (f0, c0, t0) = (shared.frames.load(Ordering::Relaxed), server.cpu_secs(), Instant::now());
    let me0 = fanout::procs::cpu_secs("self");
    thread::sleep(Duration::from_secs(k.secs as u64));
    let (f1, c1, secs) = (shared.frames.load(Ordering::Relaxed), server.cpu_secs(), t0.elapsed().as_secs_f64());
    t.client_util = (fanout::procs::cpu_secs("self") - me0) / secs;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    thread::sleep(Duration::from_millis(500));
    t.rss_after_kib = server.rss_kib();
    let res = clients.finish();
    if let Some(e) = res.errors.first() {
        eprintln!("  {} errors, first: {e}", res.errors.len());
    }
    let frames = (f1 - f0) as f64;
    t.frames_per_sec = frames / secs;
    t.cpu_per_frame_us = (c1 - c0) * 1e6 / frames.max(1.0);
    t.cpu_util = (c1 - c0) / secs;
    t.stalls = stalls.load(Ordering::Relaxed);
    t.writes = next.load(Ordering::Relaxed).min(MAX_WRITES);
    Ok(t)
}

fn per_socket(from_kib: u64, to_kib: u64, sockets: usize) -> f64 {
    (to_kib as f64 - from_kib as f64) * 1024.0 / sockets as f64
}

fn machine() -> String {
    let cores = thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), Linux {}", kernel.trim())
}

fn run(k: &Knobs, only: Option<Kind>, memory_only: bool) -> Result<(), String> {
    println!("machine: {}", machine());
    let kinds: Vec<Kind> = [Kind::Syncgate, Kind::Raw].into_iter().filter(|x| only.is_none_or(|o| o == *x)).collect();
    let mut sample: Option<Vec<u8>> = None;
    let mut lat = Vec::new();
    if !memory_only {
        if kinds.contains(&Kind::Raw) && !kinds.contains(&Kind::Syncgate) {
            // The raw server broadcasts copies of a syncgate frame; take one.
            let sg = ServerProc::syncgate()?;
            let quick = Knobs { rate: 50, secs: 1, warm: 1, sockets_a: 1, ..*k };
            sample = latency(&sg, &quick, None)?.1;
        }
        for kind in &kinds {
            let server = if *kind == Kind::Syncgate { ServerProc::syncgate()? } else { ServerProc::raw()? };
            println!("(a) {}: {} sockets, {} writes/s for {}+{} s", kind.name(), k.sockets_a, k.rate, k.warm, k.secs);
            let (l, s) = latency(&server, k, sample.as_deref())?;
            if sample.is_none() {
                sample = s;
            }
            println!(
                "    p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} samples ({} missing), {:.1} writes/s achieved, {:.2} µs server CPU per frame",
                l.p50 as f64 / 1e3,
                l.p99 as f64 / 1e3,
                l.max as f64 / 1e3,
                l.samples,
                l.missing,
                l.rate,
                l.cpu_per_frame_us
            );
            lat.push((*kind, l));
            drop(server);
        }
    }
    let mut thr = Vec::new();
    for kind in &kinds {
        let server = if *kind == Kind::Syncgate { ServerProc::syncgate()? } else { ServerProc::raw()? };
        println!("(b,c) {}: {} sockets, window {} writes", kind.name(), k.sockets_b, k.window);
        let t = throughput(&server, k, sample.as_deref(), memory_only)?;
        println!(
            "    RSS {} KiB at start, {} connected, {} joined: {:.0} B per connected socket, {:.0} B per joined socket",
            t.rss_start_kib,
            t.rss_connected_kib,
            t.rss_joined_kib,
            per_socket(t.rss_start_kib, t.rss_connected_kib, k.sockets_b),
            per_socket(t.rss_start_kib, t.rss_joined_kib, k.sockets_b)
        );
        if !memory_only {
            println!(
                "    {:.0} frames/s, {:.2} µs server CPU per frame ({:.2} cores busy; client {:.2}), {} writes, {} stalls; RSS after {} KiB ({:.0} B per socket)",
                t.frames_per_sec,
                t.cpu_per_frame_us,
                t.cpu_util,
                t.client_util,
                t.writes,
                t.stalls,
                t.rss_after_kib,
                per_socket(t.rss_start_kib, t.rss_after_kib, k.sockets_b)
            );
        }
        thr.push((*kind, t));
        drop(server);
    }

    let find_l = |x: Kind| lat.iter().find(|(k, _)| *k == x).map(|(_, l)| l);
    let find_t = |x: Kind| thr.iter().find(|(k, _)| *k == x).map(|(_, t)| t);
    println!();
    println!("| measure | syncgate | raw ceiling | ratio | target |");
    println!("|---|---|---|---|---|");
    if let (Some(s), Some(r)) = (find_l(Kind::Syncgate), find_l(Kind::Raw)) {
        let ms = |us: u32| us as f64 / 1e3;
        println!("| (a) p50 latency, {} sockets, {} writes/s | {:.2} ms | {:.2} ms | {:.2}× | |", k.sockets_a, k.rate, ms(s.p50), ms(r.p50), s.p50 as f64 / r.p50.max(1) as f64);
        println!("| (a) p99 latency | {:.2} ms | {:.2} ms | **{:.2}×** | ≤ 1.5× |", ms(s.p99), ms(r.p99), s.p99 as f64 / r.p99.max(1) as f64);
        println!("| (a) max latency | {:.2} ms | {:.2} ms | {:.2}× | |", ms(s.max), ms(r.max), s.max as f64 / r.max.max(1) as f64);
        println!("| (a) server CPU per frame | {:.2} µs | {:.2} µs | {:.2}× | |", s.cpu_per_frame_us, r.cpu_per_frame_us, s.cpu_per_frame_us / r.cpu_per_frame_us);
        println!("| (a) (write, socket) pairs measured | {} ({} missing) | {} ({} missing) | | |", s.samples, s.missing, r.samples, r.missing);
        let _ = (s.writes, r.writes);
    }
    if let (Some(s), Some(r)) = (find_t(Kind::Syncgate), find_t(Kind::Raw)) {
        if !memory_only {
            println!("| (b) delivered frames/s, {} sockets | {:.0} | {:.0} | **{:.2}×** | ≥ 0.5× |", k.sockets_b, s.frames_per_sec, r.frames_per_sec, s.frames_per_sec / r.frames_per_sec);
            println!("| (b) server CPU per frame | {:.2} µs | {:.2} µs | **{:.2}×** | ≤ 2× |", s.cpu_per_frame_us, r.cpu_per_frame_us, s.cpu_per_frame_us / r.cpu_per_frame_us);
        }
        let ps = per_socket(s.rss_start_kib, s.rss_joined_kib, k.sockets_b);
        let pr = per_socket(r.rss_start_kib, r.rss_joined_kib, k.sockets_b);
        println!("| (c) RSS per idle joined socket | {:.0} B ({:.1} KiB) | {:.0} B ({:.1} KiB) | {:.2}× | ≤ 16 KiB |", ps, ps / 1024.0, pr, pr / 1024.0, ps / pr);
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--raw-server") {
        fanout::raw_broadcast::serve();
        return;
    }
    if args.iter().any(|a| a == "--sizes") {
        if let Err(e) = fanout::sizes::print() {
            eprintln!("sizes: {e}");
        }
        return;
    }
    raise_fd_limit();
    let k = Knobs {
        rate: env_num("FANOUT_RATE", 200),
        secs: env_num("FANOUT_SECS", 10),
        warm: env_num("FANOUT_WARM", 2),
        sockets_a: env_num("FANOUT_SOCKETS_A", 1000),
        sockets_b: env_num("FANOUT_SOCKETS_B", 10_000),
        window: env_num("FANOUT_WINDOW", 8),
        client_threads: env_num("FANOUT_CLIENT_THREADS", 2).max(1),
        writers: env_num("FANOUT_WRITERS", 4).max(1),
    };
    let only = match std::env::var("FANOUT_ONLY").as_deref() {
        Ok("syncgate") => Some(Kind::Syncgate),
        Ok("raw") => Some(Kind::Raw),
        _ => None,
    };
    let memory_only = args.iter().any(|a| a == "--memory");
    if let Err(e) = run(&k, only, memory_only) {
        eprintln!("fanout bench failed: {e}");
        std::process::exit(1);
    }
}
