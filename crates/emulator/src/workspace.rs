//! The emulator's workspace side (SPEC §1.5–1.6): what a stored file looks
//! like in either reading of the answers, the file and folder listings, file
//! details, delete, the one-request direct upload, and the bytes behind each
//! file's `url`.
//!
//! Invariants: listings are newest first and paginated; with
//! `--ignore-list-filters` the `name`/`path` filters are ignored (the client
//! must filter itself); docs answers never carry metadata in listings or
//! details, SDK answers do.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Answers, Emulator, EndlessPages, LedgerEntry, json_error, unauthorized};

pub(super) fn iso(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn ext(name: &str) -> String {
    name.rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

fn url_of(emu: &Emulator, e: &LedgerEntry) -> String {
    let name: String = url::form_urlencoded::byte_serialize(e.name.as_bytes()).collect();
    format!("{}/files/{}/{}", emu.base, e.file_no, name.replace('+', "%20"))
}

fn full_path(e: &LedgerEntry) -> String {
    if e.folder.is_empty() {
        e.name.clone()
    } else {
        format!("{}/{}", e.folder, e.name)
    }
}

/// A stored file as the SDKs describe it (flat, `size`, `path` = folder/name).
fn sdk_file(emu: &Emulator, e: &LedgerEntry) -> Value {
    json!({
        "id": format!("f_{}", e.file_no),
        "created_at": iso(e.created_at_ms),
        "custom_id": null,
        "extension": ext(&e.name),
        "file_no": e.file_no,
        "folder_no": e.folder_no,
        "folder_name": e.folder.rsplit('/').next().filter(|s| !s.is_empty()),
        "height": null,
        "width": null,
        "is_duplicate": false,
        "metadata": e.metadata,
        "mime_type": e.format,
        "name": e.name,
        "path": full_path(e),
        "size": e.size,
        "tags": e.tags,
        "thumbnail": null,
        "upload_source": "api",
        "url": url_of(emu, e),
        "workspace_id": "emulator",
        "format": ext(&e.name),
    })
}

/// A stored file as the docs describe it (`file_size`, `path` = the folder).
fn docs_file(emu: &Emulator, e: &LedgerEntry) -> Value {
    json!({
        "id": format!("f_{}", e.file_no),
        "file_no": e.file_no,
        "name": e.name,
        "url": url_of(emu, e),
        "path": e.folder,
        "width": null,
        "height": null,
        "format": ext(&e.name),
        "file_size": e.size,
        "workspace_no": "EMULATOR",
    })
}

/// A file's record after a rename: the docs' `FileRenameResult` (flat,
/// `file_size`, `path` the full path, `extension`), or the SDKs' record.
pub(super) fn renamed_file(emu: &Emulator, e: &LedgerEntry) -> Value {
    match emu.opts.answers {
        Answers::Sdk => sdk_file(emu, e),
        Answers::Docs => json!({
            "id": format!("f_{}", e.file_no),
            "file_no": e.file_no,
            "name": e.name,
            "folder_id": e.folder_no,
            "path": full_path(e),
            "url": url_of(emu, e),
            "format": ext(&e.name),
            "extension": ext(&e.name),
            "file_size": e.size,
            "is_delete": false,
            "is_active": true,
            "meta_data": e.metadata,
            "created_at": iso(e.created_at_ms),
            "updated_at": iso(super::now_ms()),
            "source": "api",
            "workspace_no": "EMULATOR",
        }),
    }
}

/// The answer to a successful complete or direct upload.
pub(super) fn file_answer(emu: &Emulator, e: &LedgerEntry) -> Response {
    let body = match emu.opts.answers {
        Answers::Docs => json!({"success": true, "data": docs_file(emu, e)}),
        Answers::Sdk => sdk_file(emu, e),
    };
    axum::Json(body).into_response()
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    limit: Option<usize>,
    page: Option<usize>,
    folder_no: Option<String>,
    name: Option<String>,
    path: Option<String>,
}

pub(super) async fn list_files(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    emu.stats.list_files.fetch_add(1, Ordering::Relaxed);
    if !emu.authorized(&headers) {
        return unauthorized(&emu);
    }
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    let filter = !emu.opts.ignore_list_filters;
    let name = q.name.filter(|_| filter).map(|n| n.to_lowercase());
    let prefix = q
        .path
        .filter(|_| filter)
        .map(|p| p.trim_start_matches('/').to_string());
    let inner = emu.inner.lock().expect("state lock");
    let live: Vec<&LedgerEntry> = inner
        .ledger
        .iter()
        .rev()
        .filter(|e| !e.deleted)
        .filter(|e| emu.listed_yet(e))
        .filter(|e| q.folder_no.is_none() || e.folder_no == q.folder_no)
        .filter(|e| name.as_ref().is_none_or(|n| e.name.to_lowercase().contains(n)))
        .filter(|e| {
            prefix
                .as_ref()
                .is_none_or(|p| full_path(e).starts_with(p.as_str()))
        })
        .collect();
    let files: Vec<Value> = live
        .iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|e| match emu.opts.answers {
            Answers::Sdk => sdk_file(&emu, e),
            Answers::Docs => json!({
                "file_no": e.file_no,
                "name": e.name,
                "url": url_of(&emu, e),
                "file_size": e.size,
                "format": ext(&e.name),
                "created_at": iso(e.created_at_ms),
                "path": e.folder,
                "workspace_no": "EMULATOR",
            }),
        })
        .collect();
    let total = live.len();
    let last_page = total.div_ceil(limit).max(1);
    let (files, has_next) = match emu.opts.endless_pages {
        None => (files, page * limit < total),
        // Past the end: the last page once more, and a next one promised.
        Some(EndlessPages::Repeat) if page > last_page => {
            let again: Vec<Value> = live
                .iter()
                .skip((last_page - 1) * limit)
                .take(limit)
                .map(|e| {
                    json!({"file_no": e.file_no, "name": e.name, "file_size": e.size, "size": e.size,
                                "created_at": iso(e.created_at_ms), "path": e.folder})
                })
                .collect();
            (again, true)
        }
        // Past the end: made-up files, never the same twice.
        Some(EndlessPages::New) if page > last_page => {
            let made: Vec<Value> = (0..limit)
                .map(|i| {
                    json!({"file_no": format!("ghost-{page}-{i}"), "name": format!("ghost-{page}-{i}.bin"),
                                "file_size": 1, "size": 1, "created_at": iso(0), "path": ""})
                })
                .collect();
            (made, true)
        }
        Some(_) => (files, true),
    };
    axum::Json(json!({
        "files": files,
        "meta": {"page": page, "limit": limit, "total": total, "hasNext": has_next, "hasPrev": page > 1},
    }))
    .into_response()
}

#[derive(Deserialize)]
pub(super) struct FolderQuery {
    parent_folder_no: Option<String>,
}

pub(super) async fn list_folders(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    Query(q): Query<FolderQuery>,
) -> Response {
    emu.stats.list_folders.fetch_add(1, Ordering::Relaxed);
    if !emu.authorized(&headers) {
        return unauthorized(&emu);
    }
    let inner = emu.inner.lock().expect("state lock");
    let parent_path = match &q.parent_folder_no {
        None => None,
        Some(no) => match inner.folders.iter().find(|(_, f)| &f.folder_no == no) {
            Some((path, _)) => Some(path.clone()),
            None => {
                return json_error(
                    &emu,
                    StatusCode::NOT_FOUND,
                    "Not Found",
                    format!("no folder {no}"),
                );
            }
        },
    };
    let mut folders: Vec<(&String, &super::FolderRec)> = inner
        .folders
        .iter()
        .filter(|(_, f)| f.parent == parent_path)
        .collect();
    folders.sort_by(|a, b| a.0.cmp(b.0));
    let items: Vec<Value> = folders
        .iter()
        .map(|(path, f)| {
            let inside = |e: &&LedgerEntry| {
                !e.deleted && (e.folder == **path || e.folder.starts_with(&format!("{path}/")))
            };
            json!({
                "folder_no": f.folder_no,
                "name": f.name,
                "created_at": iso(f.created_at_ms),
                "total_items": inner.ledger.iter().filter(inside).count(),
                "total_size": inner.ledger.iter().filter(inside).map(|e| e.size).sum::<u64>(),
            })
        })
        .collect();
    axum::Json(json!({ "folders": items })).into_response()
}

pub(super) async fn details(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    Path(file_no): Path<String>,
) -> Response {
    emu.stats.details.fetch_add(1, Ordering::Relaxed);
    if !emu.authorized(&headers) {
        return unauthorized(&emu);
    }
    let inner = emu.inner.lock().expect("state lock");
    let Some(e) = inner
        .ledger
        .iter()
        .find(|e| e.file_no == file_no && !e.deleted && emu.listed_yet(e))
    else {
        return json_error(
            &emu,
            StatusCode::NOT_FOUND,
            "Not Found",
            format!("no file {file_no}"),
        );
    };
    let data = match emu.opts.answers {
        Answers::Sdk => sdk_file(&emu, e),
        Answers::Docs => json!({
            "id": format!("f_{}", e.file_no),
            "file_no": e.file_no,
            "name": e.name,
            "url": url_of(&emu, e),
            "path": if e.folder.is_empty() { Value::Null } else { json!(e.folder) },
            "format": ext(&e.name).to_uppercase(),
            "size": e.size,
            "uploaded_at": iso(e.created_at_ms),
            "workspace": {"name": "emulator", "workspace_no": "EMULATOR"},
        }),
    };
    axum::Json(json!({"success": true, "data": data})).into_response()
}

pub(super) async fn delete_file(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    Path(file_no): Path<String>,
) -> Response {
    emu.stats.deletes.fetch_add(1, Ordering::Relaxed);
    if !emu.authorized(&headers) {
        return unauthorized(&emu);
    }
    let mut inner = emu.inner.lock().expect("state lock");
    match inner
        .ledger
        .iter_mut()
        .find(|e| e.file_no == file_no && !e.deleted)
    {
        Some(e) => {
            e.deleted = true;
            emu.storage.unlink(&e.folder, &e.name, &file_no);
            axum::Json(json!({"message": "file deleted successfully"})).into_response()
        }
        None => json_error(
            &emu,
            StatusCode::NOT_FOUND,
            "Not Found",
            format!("no file {file_no}"),
        ),
    }
}

/// The bytes behind a file's `url` (no key needed, like a CDN).
pub(super) async fn serve_file(
    State(emu): State<Arc<Emulator>>,
    Path((file_no, _name)): Path<(String, String)>,
) -> Response {
    emu.stats.url_gets.fetch_add(1, Ordering::Relaxed);
    if emu.opts.url_unreadable {
        emu.stats.fault(&emu.stats.fault_url_refused);
        return (StatusCode::FORBIDDEN, "forbidden").into_response();
    }
    if !emu.is_live(&file_no) {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    let file = match tokio::fs::File::open(emu.storage.object_path(&file_no)).await {
        Ok(f) => f,
        Err(_) => return (StatusCode::NOT_FOUND, "not found").into_response(),
    };
    let stream = futures_util::stream::try_unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), f)))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from_stream(stream))
        .expect("valid response")
}
