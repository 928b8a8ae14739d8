//! Protocol hostility: a service that answers nonsense. Each misbehaviour is
//! chosen by the uploaded file's name; every one must become a clear
//! per-file error, with no crash, no hang and no retry loop.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use serde_json::{Value, json};

use crate::harness::*;

fn start_answer(base: &str, name: &str, size: u64) -> Response {
    let part = |n: usize| (0..n).map(|i| format!("{base}/part/{i}")).collect::<Vec<_>>();
    let needed = size.div_ceil(1024).max(1) as usize;
    match name {
        "malformed.bin" => "{not json".into_response(),
        "missing-fields.bin" => axum::Json(json!({"session_id": "s"})).into_response(),
        "part-size-zero.bin" => axum::Json(json!({"session_id": "s", "part_size": 0, "parts": part(1)})).into_response(),
        "part-size-negative.bin" => {
            axum::Json(json!({"session_id": "s", "part_size": -5, "parts": part(1)})).into_response()
        }
        "too-few-parts.bin" => {
            axum::Json(json!({"session_id": "s", "part_size": 1024, "parts": part(needed - 1)})).into_response()
        }
        "too-many-parts.bin" => {
            axum::Json(json!({"session_id": "s", "part_size": 1024, "parts": part(needed + 3)})).into_response()
        }
        "remote-http.bin" => axum::Json(
            json!({"session_id": "s", "part_size": 1024, "parts": vec!["http://storage.example.com/p?sig=1"; needed]}),
        )
        .into_response(),
        "success-false.bin" => axum::Json(json!({"success": false, "error": "quota", "message": "workspace full"})).into_response(),
        "gigantic.bin" => "x".repeat(16 * 1024 * 1024).into_response(),
        // A well-formed start; complete then lies about the size.
        _ => axum::Json(json!({"session_id": name, "part_size": 1024, "parts": part(needed)})).into_response(),
    }
}

async fn start(State(base): State<String>, body: Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or_default();
    start_answer(
        &base,
        req["file_name"].as_str().unwrap_or(""),
        req["size"].as_u64().unwrap_or(0),
    )
}

async fn complete(body: Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or_default();
    axum::Json(json!({"success": true, "data": {
        "id": "1", "file_no": "9", "name": req["session_id"], "path": "elsewhere",
        "file_size": 1, "url": "https://cdn.example/x"
    }}))
    .into_response()
}

fn serve() -> String {
    serve_app(|base| {
        Router::new()
            .route("/api/v1/multipart/start", post(start))
            .route("/api/v1/multipart/complete", post(complete))
            .route("/part/{i}", put(|| async { "" }))
            .with_state(base)
    })
}

#[test]
fn nonsense_from_the_service_is_a_clear_per_file_error() {
    let base = serve();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nendpoint = \"{base}\"\nrequest_timeout = \"10s\"\n[agent]\ndirect_upload_max = \"0\"\n"
        ),
    )
    .unwrap();
    let cases = [
        ("malformed.bin", "not JSON"),
        ("missing-fields.bin", "no part_size"),
        ("part-size-zero.bin", "part_size 0"),
        ("part-size-negative.bin", "part_size -5"),
        ("too-few-parts.bin", "part URLs"),
        ("too-many-parts.bin", "part URLs"),
        ("remote-http.bin", "unencrypted"),
        ("success-false.bin", "success=false"),
        ("gigantic.bin", "larger than"),
        ("size-lie.bin", "the service stored 1 B for a 3,000 B file"),
    ];
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("--config")
        .arg(&config)
        .args(["upload", "--json"])
        .env("AUTORENDER_API_KEY", KEY)
        // This server's parts are small: the 5 MiB floor is not what is tested here.
        .env("AUTORENDER_TEST_MIN_PART_SIZE", "1")
        .env("HOME", dir.path());
    for (name, _) in &cases {
        write_file(&dir.path().join(name), 3000, 1);
        cmd.arg(dir.path().join(name));
    }
    let started = std::time::Instant::now();
    let out = run(cmd);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "no retry loop: took {:?}",
        started.elapsed()
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"));
    let results: Vec<Value> = serde_json::from_str(&out.stdout).expect("JSON results");
    for (name, expect) in cases {
        let r = results
            .iter()
            .find(|r| r["file"].as_str().unwrap().ends_with(name))
            .unwrap();
        assert_eq!(r["ok"], false, "{name}");
        let err = r["error"].as_str().unwrap();
        assert!(err.contains(expect), "{name}: expected \"{expect}\" in \"{err}\"");
    }
}

/// Serves the app `make` builds (given its own base URL) on 127.0.0.1:0 in
/// its own thread for up to 5 minutes; returns the base URL.
fn serve_app(make: impl FnOnce(String) -> Router + Send + 'static) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr: SocketAddr = listener.local_addr().unwrap();
            let base = format!("http://{addr}");
            tx.send(base.clone()).unwrap();
            let app = make(base);
            let _ = tokio::time::timeout(Duration::from_secs(300), axum::serve(listener, app)).await;
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

/// The key follows a redirect only to the same host: a redirect to another
/// host is refused, and that host never sees the key.
#[test]
fn credentials_never_follow_a_redirect_to_another_host() {
    use axum::http::{HeaderMap, StatusCode, header};
    use std::sync::{Arc, Mutex};
    // The "other host": records any Authorization it is sent.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorder = seen.clone();
    let other = serve_app(move |_| {
        Router::new().route(
            "/api/v1/files",
            axum::routing::get({
                let seen = recorder.clone();
                move |h: HeaderMap| async move {
                    if let Some(a) = h.get(header::AUTHORIZATION) {
                        seen.lock().unwrap().push(a.to_str().unwrap_or("").to_string());
                    }
                    axum::Json(json!({"files": [], "meta": {}}))
                }
            }),
        )
    });
    // `localhost` is another host name than `127.0.0.1`, as far as credentials go.
    let other = other.replace("127.0.0.1", "localhost");
    let redirect_to = |to: String| {
        Router::new()
            .route(
                "/api/v1/files",
                axum::routing::get(move || {
                    let to = to.clone();
                    async move { (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response() }
                }),
            )
            .route(
                "/same/api/v1/files",
                axum::routing::get(|| async { axum::Json(json!({"files": [], "meta": {}})) }),
            )
    };
    let to_other = format!("{other}/api/v1/files?limit=1");
    let foreign = serve_app(move |_| redirect_to(to_other));
    let check = |endpoint: &str| {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(&config, format!("[api]\nendpoint = \"{endpoint}\"\n")).unwrap();
        let mut c = std::process::Command::new(bin());
        c.arg("--config")
            .arg(&config)
            .arg("check")
            .env("AUTORENDER_API_KEY", KEY)
            .env("HOME", dir.path());
        run(c)
    };
    let out = check(&foreign);
    assert_ne!(
        out.code, 0,
        "a redirect to another host is not followed: {}",
        out.stdout
    );
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("redirect to another host refused"), "{said}");
    assert!(seen.lock().unwrap().is_empty(), "the other host saw the key");
    assert!(!out.stdout.contains(KEY) && !out.stderr.contains(KEY));

    // The same host: followed (a relative redirect within the service).
    let same = serve_app(move |_| redirect_to("/same/api/v1/files?limit=1".into()));
    let out = check(&same);
    assert_eq!(
        out.code, 0,
        "a same-host redirect is followed: {}{}",
        out.stdout, out.stderr
    );
}
