//! `emulator`: serve the local AutoRender API until Ctrl-C / SIGTERM. The
//! first line on stdout is `listening on http://ADDR`, so scripts and tests
//! can bind port 0 and read the address back.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{CliError, CliResult};
use crate::emulator::{self, Options};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free one)
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Folder finished uploads are written to, as <store>/<folder>/<name> [default: a temp dir]
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// The API key clients must send
    #[arg(
        long,
        env = "AUTORENDER_EMULATOR_KEY",
        default_value = "emulator-key",
        hide_env_values = true
    )]
    pub api_key: String,
    /// Part size handed out by start, e.g. 10MiB or 65536
    #[arg(long, value_name = "BYTES", default_value = "10MiB", value_parser = parse_size)]
    pub part_size: u64,
    /// Fraction of part PUTs that fail (half 500s, half dropped connections)
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub fail_parts: f64,
    /// Fraction of starts answered 429 with Retry-After
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub throttle_start: f64,
    /// Fault: the first N starts are answered 429 (deterministic)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub throttle_first: u64,
    /// The Retry-After (seconds) sent with a throttled start
    #[arg(long, value_name = "SECS", default_value_t = 1)]
    pub retry_after: u64,
    /// Fraction of completes that fail (half before finishing, half with the answer lost)
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub fail_complete: f64,
    /// Cap on presigned URL lifetime in seconds
    #[arg(long, value_name = "SECS")]
    pub url_ttl: Option<u64>,
    /// Delay added to every API and storage request, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency: u64,
    /// Seed for the fault generator (same seed, same faults); 0 = random
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Base URL for the part and file URLs it hands out (when clients reach it through a proxy)
    #[arg(long, value_name = "URL")]
    pub public_url: Option<url::Url>,
    /// Largest file start accepts; bigger ones get 413
    #[arg(long, value_name = "BYTES", default_value = "5TiB", value_parser = parse_size)]
    pub max_size: u64,
    /// Which reading of the API to answer in: the docs' (wrapped, file_size,
    /// path = folder) or the official SDKs' (flat, size, path = folder/name)
    #[arg(long, value_enum, default_value_t = emulator::Answers::Docs)]
    pub answers: emulator::Answers,
    /// Forget a session once it is finished: a repeated complete gets 404
    #[arg(long)]
    pub forget_sessions: bool,
    /// Complete takes this long (ms) after the parts are assembled (a second
    /// complete meanwhile gets 400 "parts incomplete"), and a direct upload
    /// as long after its body arrived
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub complete_delay: u64,
    /// The file listing ignores its name and path filters
    #[arg(long)]
    pub ignore_list_filters: bool,
    /// Largest direct upload (POST /api/v1/uploads) accepted; bigger ones get 413
    #[arg(long, value_name = "BYTES", default_value = "100MiB", value_parser = parse_size)]
    pub direct_max: u64,
    /// Place every file under this folder instead of where it was asked to
    /// go, so answers name another folder (clients should warn)
    #[arg(long, value_name = "FOLDER")]
    pub folder_root: Option<String>,
    /// Fault: store a direct upload re-encoded (each chunk twice, so another
    /// size) and answer 500, as a proxy rewriting bodies would
    #[arg(long)]
    pub reencode_direct: bool,
    /// Fault: send every answer's body a byte at a time, MS apart
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub trickle: u64,
    /// Fault: the file listing never ends (repeat: the last page again;
    /// new: made-up files), always promising a next page
    #[arg(long, value_enum, value_name = "HOW")]
    pub endless_pages: Option<emulator::EndlessPages>,
    /// Fault: a file's `url` answers 403 (a CDN that refuses the agent), so
    /// content cannot be compared through it
    #[arg(long)]
    pub url_unreadable: bool,
    /// Fault: a stored file shows in listings and details only MS after it
    /// was stored (an index that lags)
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub list_lag: u64,
    /// Fault: the first N completes or direct uploads are stored but their
    /// answer is lost (502)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub lose_first: u64,
    /// A long fat pipe: each request body is read no faster than this per
    /// second (one TCP stream's share of a long, lossy link; e.g. 2MiB)
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub stream_rate: Option<u64>,
    /// A long fat pipe: all request bodies together no faster than this per
    /// second (the link; e.g. 40MiB). POST /_emulator/link?rate=BYTES changes
    /// it while the emulator runs (0: no cap)
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub link_rate: Option<u64>,
    /// A long fat pipe: the chance (0 to 1) that a request body stops once
    /// in its middle for --stall-ms
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub stalls: f64,
    /// How long a stall of --stalls lasts
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub stall_ms: u64,
}

fn parse_size(s: &str) -> Result<u64, String> {
    match crate::units::parse_size(s).map_err(|e| e.to_string())? {
        0 => Err("must be at least 1 byte".into()),
        n => Ok(n),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("\"{s}\" is not a rate between 0 and 1 (e.g. 0.3)")),
    }
}

pub async fn run(args: &Args) -> CliResult {
    let (store, _temp) = match &args.store {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::Usage(format!("cannot create --store {}: {e}", dir.display())))?;
            (dir.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("autorender-emulator-")
                .tempdir()
                .map_err(|e| CliError::Failed(format!("cannot create a temp store: {e}")))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|e| {
        CliError::Usage(format!(
            "cannot listen on {}: {e}; pick another --listen address",
            args.listen
        ))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let mut opts = Options::new(args.api_key.clone(), store.clone());
    opts.part_size = args.part_size;
    opts.fail_parts = args.fail_parts;
    opts.throttle_start = args.throttle_start;
    opts.throttle_first = args.throttle_first;
    opts.retry_after = args.retry_after;
    opts.fail_complete = args.fail_complete;
    opts.url_ttl = args.url_ttl;
    opts.latency = Duration::from_millis(args.latency);
    opts.seed = args.seed;
    opts.max_size = args.max_size;
    opts.public_url = args.public_url.as_ref().map(|u| u.to_string());
    opts.answers = args.answers;
    opts.forget_sessions = args.forget_sessions;
    opts.complete_delay = Duration::from_millis(args.complete_delay);
    opts.ignore_list_filters = args.ignore_list_filters;
    opts.direct_max = args.direct_max;
    opts.folder_root = args.folder_root.clone();
    opts.reencode_direct = args.reencode_direct;
    opts.trickle = Duration::from_millis(args.trickle);
    opts.endless_pages = args.endless_pages;
    opts.url_unreadable = args.url_unreadable;
    opts.list_lag = Duration::from_millis(args.list_lag);
    opts.lose_first = args.lose_first;
    opts.stream_rate = args.stream_rate.unwrap_or(0);
    opts.link_rate = args.link_rate.unwrap_or(0);
    opts.stalls = args.stalls;
    opts.stall = Duration::from_millis(args.stall_ms);
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on http://{addr}");
    let _ = out.flush();
    eprintln!(
        "AutoRender emulator: store {}; point `api.endpoint` at http://{addr}; Ctrl-C stops it",
        store.display()
    );
    emulator::serve(opts, listener, super::signals::shutdown_signal())
        .await
        .map_err(|e| CliError::Failed(format!("emulator stopped: {e}")))?;
    Ok(ExitCode::SUCCESS)
}
