//! A long fat pipe between the client and the emulator, for tests and
//! benchmarks (`--stream-rate`, `--link-rate`, `--stalls`; `--latency` is
//! the router's): every request body is read no faster than one
//! connection's share (`stream_rate`, bytes/s per request) and all bodies
//! together no faster than the link (`link_rate`, one token bucket shared
//! by every request), as a WAN where a single TCP stream is capped by its
//! round trip and loss while many streams fill the link. `stalls` is the
//! chance a body stops for `stall` once in its middle. The link's rate can
//! be changed while it runs (`POST /_emulator/link?rate=BYTES`), as a link
//! that halves mid-transfer.

use std::sync::atomic::AtomicBool;

use tokio::time::Instant;

use super::*;

/// The pipe's settings and its shared link.
#[derive(Debug)]
pub struct Pipe {
    /// Bytes/s one request body may use (0: no cap).
    pub stream_rate: u64,
    /// Bytes/s all bodies share (0: no cap); changed at run time.
    pub link_rate: AtomicU64,
    /// When the link is next free (its bucket, as a schedule).
    link_free: Mutex<Option<Instant>>,
    pub stalls: f64,
    pub stall: Duration,
}

impl Pipe {
    pub fn new(stream_rate: u64, link_rate: u64, stalls: f64, stall: Duration) -> Pipe {
        Pipe {
            stream_rate,
            link_rate: AtomicU64::new(link_rate),
            link_free: Mutex::new(None),
            stalls,
            stall,
        }
    }

    pub fn is_open(&self) -> bool {
        self.stream_rate == 0 && self.link_rate.load(Ordering::Relaxed) == 0 && self.stalls == 0.0
    }

    /// When `n` more bytes have crossed the link (reserved now).
    fn reserve_link(&self, n: u64) -> Option<Instant> {
        let rate = self.link_rate.load(Ordering::Relaxed);
        if rate == 0 {
            return None;
        }
        let mut free = self.link_free.lock().expect("link lock");
        let now = Instant::now();
        let start = free.filter(|f| *f > now).unwrap_or(now);
        let done = start + Duration::from_secs_f64(n as f64 / rate as f64);
        *free = Some(done);
        Some(done)
    }
}

/// The request with its body read through the pipe.
pub(super) fn through(emu: &Arc<Emulator>, req: Request) -> Request {
    let pipe = &emu.pipe;
    if pipe.is_open() {
        return req;
    }
    let stall_here = pipe.stalls > 0.0 && emu.chance(pipe.stalls);
    let (parts, body) = req.into_parts();
    let emu = emu.clone();
    let began = Instant::now();
    let read = AtomicU64::new(0);
    let stalled = AtomicBool::new(!stall_here);
    let stream = body.into_data_stream().then(move |chunk| {
        let emu = emu.clone();
        let n = chunk.as_ref().map_or(0, |c| c.len() as u64);
        let so_far = read.fetch_add(n, Ordering::Relaxed) + n;
        let stall = !stalled.swap(true, Ordering::Relaxed);
        async move {
            let pipe = &emu.pipe;
            if stall {
                emu.stats.pipe_stalls.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(pipe.stall).await;
            }
            // Both caps at once: the chunk is through when its stream's
            // share and the link's schedule both allow.
            let link = pipe.reserve_link(n);
            if pipe.stream_rate > 0 {
                let due = began + Duration::from_secs_f64(so_far as f64 / pipe.stream_rate as f64);
                tokio::time::sleep_until(due).await;
            }
            if let Some(due) = link {
                tokio::time::sleep_until(due).await;
            }
            chunk
        }
    });
    Request::from_parts(parts, Body::from_stream(stream))
}

#[derive(Debug, Deserialize)]
pub(super) struct LinkQuery {
    rate: u64,
}

/// `POST /_emulator/link?rate=BYTES`: the link's rate from now on (0: no cap).
pub(super) async fn set_link(State(emu): State<Arc<Emulator>>, Query(q): Query<LinkQuery>) -> Response {
    emu.pipe.link_rate.store(q.rate, Ordering::Relaxed);
    axum::Json(json!({"link_rate": q.rate})).into_response()
}
