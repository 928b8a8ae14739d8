//! The emulator's routes, its latency and trickle layers, and the server.

use super::*;

/// The emulator's HTTP routes.
pub fn router(emu: Arc<Emulator>) -> Router {
    let latency = emu.opts.latency;
    let trickle = emu.opts.trickle;
    let piped = emu.clone();
    let api = Router::new()
        .route("/api/v1/multipart/start", post(start))
        .route("/api/v1/multipart/complete", post(complete))
        .route("/api/v1/files", get(workspace::list_files))
        .route(
            "/api/v1/files/{file_no}",
            get(workspace::details).delete(workspace::delete_file),
        )
        .route("/api/v1/files/{file_no}/rename", patch(rename::rename_file))
        .route("/api/v1/folders", get(workspace::list_folders))
        .route("/api/v1/folders/rename/{folder_no}", post(rename::rename_folder))
        // The form's size is checked against --direct-max by the handler itself.
        .route(
            "/api/v1/uploads",
            post(direct::direct_upload).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/_storage/{session}/{part}", put(put_part))
        .route("/files/{file_no}/{name}", get(workspace::serve_file))
        // Half the latency before the request is handled, half before the
        // answer leaves: like a real round trip, the work is done before the
        // client hears of it.
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let req = pipe::through(&piped, req);
            async move {
                if !latency.is_zero() {
                    tokio::time::sleep(latency / 2).await;
                }
                let resp = next.run(req).await;
                if !latency.is_zero() {
                    tokio::time::sleep(latency - latency / 2).await;
                }
                if trickle.is_zero() {
                    resp
                } else {
                    trickled(resp, trickle).await
                }
            }
        }));
    Router::new()
        .route("/_emulator/uploads", get(ledger))
        .route("/_emulator/stats", get(stats))
        .route("/_emulator/sessions", get(sessions))
        .route("/_emulator/sessions/{session}", get(session_info))
        .route("/_emulator/alter/{file_no}", post(inspect::alter))
        .route("/_emulator/link", post(pipe::set_link))
        .merge(api)
        .with_state(emu)
}

/// The answer's body a byte at a time, `every` apart (an empty body is
/// padded with 256 spaces, so there is something to wait for).
async fn trickled(resp: Response, every: Duration) -> Response {
    let (parts, body) = resp.into_parts();
    let mut bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    if bytes.is_empty() {
        bytes = vec![b' '; 256];
    }
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let byte = bytes.get(i).copied();
        async move {
            let b = byte?;
            tokio::time::sleep(every).await;
            Some((Ok::<_, std::io::Error>(Bytes::from(vec![b])), i + 1))
        }
    });
    let mut parts = parts;
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from_stream(stream))
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve(
    opts: Options,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let emu = Emulator::new(opts, addr)?;
    // No Nagle delay on streamed answers (a file's `url`), as a real
    // server would not add one.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(emu))
        .with_graceful_shutdown(shutdown)
        .await
}
