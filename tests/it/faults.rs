//! Network faults: a byte-level TCP proxy between the agent and the emulator
//! that delays, resets mid-stream, stalls forever, or trickles, per
//! connection, on top of the emulator's own fault flags. Timeouts must fire,
//! retries converge, and every file arrive byte-exact exactly once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::*;

#[derive(Default)]
struct Counts {
    pass: AtomicU64,
    latency: AtomicU64,
    reset: AtomicU64,
    stall: AtomicU64,
    trickle: AtomicU64,
}

struct FaultProxy {
    addr: SocketAddr,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    counts: Arc<Counts>,
}

fn next(seed: &Mutex<u64>) -> u64 {
    let mut s = seed.lock().unwrap();
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Copies `from` → `to`, optionally sleeping per chunk, or cutting off after `limit` bytes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    slice: usize,
    limit: Option<u64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf[..slice]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        total += n as u64;
        if limit.is_some_and(|l| total > l) {
            break;
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

async fn handle(client: TcpStream, upstream: SocketAddr, mode: u64, cut_at: u64, counts: Arc<Counts>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    match mode {
        0..70 => {
            counts.pass.fetch_add(1, Ordering::Relaxed);
            tokio::join!(
                pump(cr, sw, Duration::ZERO, 65536, None),
                pump(sr, cw, Duration::ZERO, 65536, None)
            );
        }
        70..80 => {
            counts.latency.fetch_add(1, Ordering::Relaxed);
            let d = Duration::from_millis(30);
            tokio::join!(pump(cr, sw, d, 65536, None), pump(sr, cw, d, 65536, None));
        }
        80..88 => {
            // Forward some bytes, then drop both sides: a reset mid-request.
            counts.reset.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = pump(cr, sw, Duration::ZERO, 65536, Some(cut_at)) => {}
                _ = pump(sr, cw, Duration::ZERO, 65536, None) => {}
            }
        }
        88..92 => {
            // Swallow everything, answer nothing, never close.
            counts.stall.fetch_add(1, Ordering::Relaxed);
            let mut cr = cr;
            let mut sink = vec![0u8; 65536];
            while let Ok(n) = cr.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
            drop((cw, sr, sw));
        }
        _ => {
            counts.trickle.fetch_add(1, Ordering::Relaxed);
            let d = Duration::from_millis(10);
            tokio::join!(pump(cr, sw, d, 8 * 1024, None), pump(sr, cw, d, 8 * 1024, None));
        }
    }
}

fn start_proxy(seed: u64) -> FaultProxy {
    let upstream: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let counts: Arc<Counts> = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let (up, c) = (upstream.clone(), counts.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let seed = Arc::new(Mutex::new(seed | 1));
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let Some(target) = *up.lock().unwrap() else {
                    continue;
                };
                let mode = next(&seed) % 100;
                let cut_at = 1 + next(&seed) % (200 * 1024);
                tokio::spawn(handle(client, target, mode, cut_at, c.clone()));
            }
        });
    });
    FaultProxy {
        addr: rx.recv().unwrap(),
        upstream,
        counts,
    }
}

#[test]
fn a_hundred_files_survive_resets_stalls_trickles_and_service_faults() {
    let proxy = start_proxy(0xFA17);
    let public = format!("http://{}", proxy.addr);
    let emu = Emulator::start(&[
        "--part-size",
        "256KiB",
        "--fail-parts",
        "0.2",
        "--throttle-start",
        "0.2",
        // A quarter of finishes faulted, half of them failed before
        // storing: each kind fires over ~100 completes but for a chance of
        // ~1e-6 (at 0.1 it missed one CI run in a few dozen).
        "--fail-complete",
        "0.25",
        "--url-ttl",
        "3",
        "--seed",
        "7",
        "--public-url",
        &public,
    ]);
    let emu_addr: SocketAddr = emu.url.trim_start_matches("http://").parse().unwrap();
    *proxy.upstream.lock().unwrap() = Some(emu_addr);

    let sb = Sandbox::new(
        &emu,
        "settle = \"200ms\"\nconcurrent_files = 4\nmax_attempts = 100\ndirect_upload_max = \"0\"\n",
    );
    // Point the agent at the proxy, with short timeouts so stalls are abandoned quickly.
    let text = std::fs::read_to_string(&sb.config).unwrap().replace(
        &format!("endpoint = \"{}\"", emu.url),
        &format!("endpoint = \"{public}\"\nrequest_timeout = \"3s\""),
    );
    let drop = sb.path("drop");
    std::fs::create_dir(&drop).unwrap();
    std::fs::write(
        &sb.config,
        text + &format!(
            "[[watch]]\npath = \"{}\"\nremote_folder = \"faulty\"\n",
            drop.display()
        ),
    )
    .unwrap();
    let sizes: Vec<usize> = (0..100)
        .map(|i| match i % 4 {
            0 => 1 + i * 97,
            1 => 100 * 1024 + i,
            2 => 600 * 1024 + i,
            _ => 1536 * 1024 + i,
        })
        .collect();
    for (i, size) in sizes.iter().enumerate() {
        write_file(&drop.join(format!("f{i:03}.bin")), *size, 1000 + i as u64);
    }
    let mut agent = sb.spawn_agent(&[]);
    let arrived = wait_until(Duration::from_secs(600), || emu.ledger().len() >= 100);
    // Count only once the agent is idle: nothing settling, queued or in flight.
    let idle = arrived
        && wait_until(Duration::from_secs(60), || {
            let r = &sb.status()["roots"][0];
            r["done"] == 100
                && ["settling", "pending", "uploading", "reconciling", "failed"]
                    .iter()
                    .all(|k| r[*k] == 0)
        });
    let out = agent.stop();
    assert!(
        arrived && idle,
        "{} of 100 arrived (idle: {idle}); status {}; agent log tail:\n{}",
        emu.ledger().len(),
        sb.status(),
        tail(&out.stderr)
    );
    assert_eq!(out.code, 0, "clean stop: {}", tail(&out.stderr));
    let ledger = emu.ledger();
    assert_eq!(unique_names(&ledger).len(), 100);
    assert_eq!(ledger.len(), 100, "none twice");
    for i in 0..100 {
        let name = format!("f{i:03}.bin");
        let e = ledger.iter().find(|e| e["name"] == name.as_str()).unwrap();
        assert_eq!(e["sha256"], sha256_file(&drop.join(&name)).as_str(), "{name}");
    }
    let c = &proxy.counts;
    let (reset, stall, trickle) = (
        c.reset.load(Ordering::Relaxed),
        c.stall.load(Ordering::Relaxed),
        c.trickle.load(Ordering::Relaxed),
    );
    assert!(
        reset > 0 && stall > 0 && trickle > 0,
        "every network fault was exercised"
    );
    for kind in [
        "fault_part_500",
        "fault_part_dropped",
        "fault_throttled",
        "fault_finish_failed",
        "fault_finish_lost",
        "part_rejected_expired",
    ] {
        assert!(emu.stat(kind) > 0, "the service fault {kind} never fired");
    }
    eprintln!(
        "faults: connections pass {} latency {} reset {reset} stall {stall} trickle {trickle}; service faults {}",
        c.pass.load(Ordering::Relaxed),
        c.latency.load(Ordering::Relaxed),
        emu.stat("faults_injected")
    );
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
