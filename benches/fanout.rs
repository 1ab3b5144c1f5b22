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
//! environment variables: FANOUT_RATES (writes/s in (a), "200,50"), FANOUT_SECS (10),
//! FANOUT_WARM (2), FANOUT_SOCKETS_A (1000), FANOUT_SOCKETS_B (10000),
//! FANOUT_WINDOW (writes in flight in (b), 8), FANOUT_CLIENT_THREADS (2),
//! FANOUT_WRITERS (4), FANOUT_ONLY (syncgate | raw), FANOUT_SKIP_A=1, FANOUT_PRELOAD (with
//! `--memory`: N changes every socket replays at join), FANOUT_ROUNDS
//! (alternating (b) runs per server, 2). `-- --memory` measures
//! only (c), `-- --sizes` prints the in-memory sizes behind it; SYNCGATE_* variables reach the syncgate child (e.g.
//! SYNCGATE_REALTIME__READ_BUFFER_SIZE for the memory breakdown).

#[path = "common/mod.rs"]
mod common;

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
    rate: f64,
    samples: usize,
    missing: i64,
    p50: u32,
    p99: u32,
    max: u32,
    cpu_per_frame_us: f64,
    /// Write round trips (REST: until the response; trigger: just the send), µs: p50, p99, max.
    write_rtt: (u32, u32, u32),
    /// Medians over writes, µs: write sent → first socket has it; first → last socket has it.
    to_first_us: u32,
    spread_us: u32,
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
    let rtts = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let writers: Vec<_> = (0..k.writers)
        .map(|j| {
            let mut w = server.writer(sample)?;
            let (sh, errs, rate, nw, rtts) = (shared.clone(), errors.clone(), k.rate as f64, k.writers, rtts.clone());
            Ok(thread::spawn(move || {
                let mut mine = Vec::new();
                let mut i = j;
                while i < total {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    let now = Instant::now();
                    if due > now {
                        thread::sleep(due - now);
                    }
                    sh.sent_at[i].store(sh.now_ns().max(1), Ordering::Release);
                    let t = Instant::now();
                    if let Err(e) = w.write(i) {
                        errs.lock().map(|mut v| v.push(e)).ok();
                        break;
                    }
                    if i >= record_from {
                        mine.push(t.elapsed().as_micros() as u32);
                    }
                    i += nw;
                }
                rtts.lock().map(|mut v| v.append(&mut mine)).ok();
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
    let pick_in = |s: &[u32], q: f64| s.get(((s.len() as f64 * q) as usize).min(s.len().saturating_sub(1))).copied().unwrap_or(0);
    let mut w = rtts.lock().map(|v| v.clone()).unwrap_or_default();
    w.sort_unstable();
    let write_rtt = (pick_in(&w, 0.5), pick_in(&w, 0.99), w.last().copied().unwrap_or(0));
    let (mut to_first, mut spread): (Vec<u32>, Vec<u32>) = (record_from..total)
        .filter_map(|i| {
            let (sent, f, l) = (
                shared.sent_at[i].load(Ordering::Relaxed),
                shared.first_at[i].load(Ordering::Relaxed),
                shared.last_at[i].load(Ordering::Relaxed),
            );
            (f != u64::MAX && sent > 0).then(|| ((f.saturating_sub(sent) / 1000) as u32, (l.saturating_sub(f) / 1000) as u32))
        })
        .unzip();
    to_first.sort_unstable();
    spread.sort_unstable();
    let s = &mut res.lat_us;
    s.sort_unstable();
    let pick = |q: f64| pick_in(s, q);
    let expected = ((total - record_from) * k.sockets_a) as i64;
    Ok((
        Latency {
            rate: total as f64 / sent_secs,
            samples: s.len(),
            missing: expected - s.len() as i64,
            p50: pick(0.50),
            p99: pick(0.99),
            max: s.last().copied().unwrap_or(0),
            cpu_per_frame_us: cpu * 1e6 / frames.max(1) as f64,
            write_rtt,
            to_first_us: pick_in(&to_first, 0.5),
            spread_us: pick_in(&spread, 0.5),
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
    frames_per_read: f64,
    stalls: usize,
    writes: usize,
}

/// (c) then (b): connect and join `sockets_b` sockets, read RSS, then keep
/// `window` writes in flight (write k goes once every socket has write k - window).
fn throughput(server: &ServerProc, k: &Knobs, sample: Option<&[u8]>, memory_only: bool) -> Result<Throughput, String> {
    const MAX_WRITES: usize = 200_000;
    let shared = Shared::new(MAX_WRITES, usize::MAX);
    let preload = if memory_only { env_num("FANOUT_PRELOAD", 0) } else { 0 };
    if preload > 0 && server.kind == Kind::Syncgate {
        // Changes in the log before anyone joins; the joins resume from 0 and replay them.
        let mut w = server.writer(sample)?;
        for i in 0..preload {
            w.write(i)?;
        }
    }
    thread::sleep(Duration::from_millis(300));
    let rss_start_kib = server.rss_kib();
    let cpu_start = server.cpu_secs();
    let clients = Clients::connect(server, shared.clone(), k.sockets_b, k.client_threads)?;
    thread::sleep(Duration::from_millis(500));
    let rss_connected_kib = server.rss_kib();
    let cpu_connected = server.cpu_secs();
    let join_start = Instant::now();
    clients.join()?;
    println!(
        "    server CPU {:.2} s to accept {} sockets, {:.2} s to answer their joins ({:.1} s wall)",
        cpu_connected - cpu_start,
        k.sockets_b,
        server.cpu_secs() - cpu_connected,
        join_start.elapsed().as_secs_f64()
    );
    if preload > 0 && server.kind == Kind::Syncgate {
        let sh = shared.clone();
        let want = (preload * k.sockets_b) as u64;
        wait_for("the replays", 120, || sh.frames.load(Ordering::Relaxed) >= want)?;
    }
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
        frames_per_read: 0.0,
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
    let r0 = shared.reads.load(Ordering::Relaxed);
    let me0 = fanout::procs::cpu_secs("self");
    thread::sleep(Duration::from_secs(k.secs as u64));
    let (f1, c1, secs) = (shared.frames.load(Ordering::Relaxed), server.cpu_secs(), t0.elapsed().as_secs_f64());
    t.client_util = (fanout::procs::cpu_secs("self") - me0) / secs;
    t.frames_per_read = (f1 - f0) as f64 / (shared.reads.load(Ordering::Relaxed) - r0).max(1) as f64;
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

fn start(kind: Kind) -> Result<ServerProc, String> {
    if kind == Kind::Syncgate {
        ServerProc::syncgate()
    } else {
        ServerProc::raw()
    }
}

fn run(k: &Knobs, rates: &[usize], rounds: usize, only: Option<Kind>, memory_only: bool) -> Result<(), String> {
    println!("machine: {}", machine());
    let kinds: Vec<Kind> = [Kind::Syncgate, Kind::Raw].into_iter().filter(|x| only.is_none_or(|o| o == *x)).collect();
    let skip_a = memory_only || std::env::var("FANOUT_SKIP_A").is_ok_and(|v| v == "1");
    // The raw server broadcasts copies of a real syncgate change frame; take one first.
    let sample = {
        let sg = ServerProc::syncgate()?;
        let quick = Knobs { rate: 50, secs: 1, warm: 1, sockets_a: 1, ..*k };
        latency(&sg, &quick, None)?.1
    };
    println!("change frame: {} bytes", sample.as_ref().map_or(0, |s| s.len()));
    let mut lat: Vec<(usize, Kind, Latency)> = Vec::new();
    for &rate in rates.iter().filter(|_| !skip_a) {
        let ka = Knobs { rate, ..*k };
        for kind in &kinds {
            let server = start(*kind)?;
            println!("(a) {}: {} sockets, {} writes/s for {}+{} s", kind.name(), ka.sockets_a, rate, ka.warm, ka.secs);
            let (l, _) = latency(&server, &ka, sample.as_deref())?;
            println!(
                "    p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} samples ({} missing), {:.1} writes/s achieved, {:.2} µs server CPU per frame; write round trip p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; median write → first socket {:.2} ms, first → last socket {:.2} ms",
                l.p50 as f64 / 1e3,
                l.p99 as f64 / 1e3,
                l.max as f64 / 1e3,
                l.samples,
                l.missing,
                l.rate,
                l.cpu_per_frame_us,
                l.write_rtt.0 as f64 / 1e3,
                l.write_rtt.1 as f64 / 1e3,
                l.write_rtt.2 as f64 / 1e3,
                l.to_first_us as f64 / 1e3,
                l.spread_us as f64 / 1e3
            );
            lat.push((rate, *kind, l));
        }
    }
    let mut thr: Vec<(Kind, Throughput)> = Vec::new();
    for round in 0..if memory_only { 1 } else { rounds.max(1) } {
        for kind in &kinds {
            let server = start(*kind)?;
            println!("(b,c) {} round {}: {} sockets, window {} writes", kind.name(), round + 1, k.sockets_b, k.window);
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
                    "    {:.0} frames/s, {:.2} µs server CPU per frame ({:.2} cores busy; client {:.2}), {:.2} frames per client read, {} writes, {} stalls; RSS after {} KiB ({:.0} B per socket)",
                    t.frames_per_sec,
                    t.cpu_per_frame_us,
                    t.cpu_util,
                    t.client_util,
                    t.frames_per_read,
                    t.writes,
                    t.stalls,
                    t.rss_after_kib,
                    per_socket(t.rss_start_kib, t.rss_after_kib, k.sockets_b)
                );
            }
            thr.push((*kind, t));
        }
    }

    println!();
    println!("| measure | syncgate | raw ceiling | ratio | target |");
    println!("|---|---|---|---|---|");
    for &rate in rates {
        let find = |x: Kind| lat.iter().find(|(r, k, _)| *r == rate && *k == x).map(|(_, _, l)| l);
        let (Some(s), Some(r)) = (find(Kind::Syncgate), find(Kind::Raw)) else {
            continue;
        };
        let ms = |us: u32| us as f64 / 1e3;
        let ratio = |a: u32, b: u32| a as f64 / b.max(1) as f64;
        let at = format!("{} sockets, {rate} writes/s", k.sockets_a);
        println!("| (a) p50 latency, {at} | {:.2} ms | {:.2} ms | {:.2}× | |", ms(s.p50), ms(r.p50), ratio(s.p50, r.p50));
        println!("| (a) p99 latency, {at} | {:.2} ms | {:.2} ms | **{:.2}×** | ≤ 1.5× |", ms(s.p99), ms(r.p99), ratio(s.p99, r.p99));
        println!("| (a) max latency, {at} | {:.2} ms | {:.2} ms | {:.2}× | |", ms(s.max), ms(r.max), ratio(s.max, r.max));
        println!(
            "| (a) server CPU per frame, {at} | {:.2} µs | {:.2} µs | {:.2}× | |",
            s.cpu_per_frame_us,
            r.cpu_per_frame_us,
            s.cpu_per_frame_us / r.cpu_per_frame_us
        );
        println!("| (a) (write, socket) pairs, {at} | {} ({} missing) | {} ({} missing) | | |", s.samples, s.missing, r.samples, r.missing);
    }
    let of = |x: Kind| thr.iter().filter(move |(k, _)| *k == x).map(|(_, t)| t);
    if of(Kind::Syncgate).next().is_some() && of(Kind::Raw).next().is_some() {
        if !memory_only {
            // Over all rounds: frames/s averaged, CPU per frame weighted by frames.
            let fps = |x: Kind| of(x).map(|t| t.frames_per_sec).sum::<f64>() / of(x).count() as f64;
            let cpf =
                |x: Kind| of(x).map(|t| t.cpu_per_frame_us * t.frames_per_sec).sum::<f64>() / of(x).map(|t| t.frames_per_sec).sum::<f64>();
            let (sf, rf, sc, rc) = (fps(Kind::Syncgate), fps(Kind::Raw), cpf(Kind::Syncgate), cpf(Kind::Raw));
            println!("| (b) delivered frames/s, {} sockets | {sf:.0} | {rf:.0} | **{:.2}×** | ≥ 0.5× |", k.sockets_b, sf / rf);
            println!("| (b) server CPU per frame | {sc:.2} µs | {rc:.2} µs | **{:.2}×** | ≤ 2× |", sc / rc);
        }
        let mem = |x: Kind| of(x).next().map_or(0.0, |t| per_socket(t.rss_start_kib, t.rss_joined_kib, k.sockets_b));
        let (ps, pr) = (mem(Kind::Syncgate), mem(Kind::Raw));
        println!(
            "| (c) RSS per idle joined socket, {} sockets | {:.0} B ({:.1} KiB) | {:.0} B ({:.1} KiB) | {:.2}× | ≤ 16 KiB |",
            k.sockets_b,
            ps,
            ps / 1024.0,
            pr,
            pr / 1024.0,
            ps / pr
        );
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
        rate: 0,
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
    let rates: Vec<usize> = std::env::var("FANOUT_RATES")
        .unwrap_or_else(|_| "200,50".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .filter(|r| *r > 0)
        .collect();
    if let Err(e) = run(&k, &rates, env_num("FANOUT_ROUNDS", 2), only, memory_only) {
        eprintln!("fanout bench failed: {e}");
        std::process::exit(1);
    }
}
