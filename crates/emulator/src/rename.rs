//! Renames (SPEC §7, issue 29): `PATCH /api/v1/files/{file_no}/rename`
//! and `POST /api/v1/folders/rename/{folder_no}`, each `{"name": …}`.
//!
//! As the docs say of the service, a file's new name without an extension
//! keeps the old one (`demo` → `demo.png`); the answer is the file's new
//! record. A folder rename renames the last part of its path; every file
//! and folder below moves with it. The docs' reading answers a file rename
//! with the bare record and a folder rename with the bare folder; the SDKs'
//! reading wraps both in `{"success": true, "data": …}`, so a client must
//! read either.

use super::*;

#[derive(Deserialize)]
pub(super) struct RenameBody {
    name: Option<String>,
}

/// A name the service would take: not empty, no `/`, not `.`/`..`, at
/// most 255 bytes.
fn bad_name(name: &str) -> Option<&'static str> {
    if name.trim().is_empty() {
        Some("name must not be empty")
    } else if name.contains('/') || name.contains('\\') {
        Some("name must not contain a path separator")
    } else if name == "." || name == ".." {
        Some("name must be a name")
    } else if name.len() > 255 {
        Some("name is longer than 255 bytes")
    } else {
        None
    }
}

fn wrapped(emu: &Emulator, v: Value) -> Response {
    match emu.opts.answers {
        Answers::Docs => axum::Json(v).into_response(),
        Answers::Sdk => axum::Json(json!({"success": true, "data": v})).into_response(),
    }
}

pub(super) async fn rename_file(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    Path(file_no): Path<String>,
    body: Option<axum::Json<RenameBody>>,
) -> Response {
    emu.stats.renames.fetch_add(1, Ordering::Relaxed);
    if !emu.authorized(&headers) {
        return unauthorized(&emu);
    }
    let Some(mut name) = body.and_then(|b| b.0.name) else {
        return json_error(&emu, StatusCode::BAD_REQUEST, "Bad Request", "name is required");
    };
    if let Some(why) = bad_name(&name) {
        return json_error(&emu, StatusCode::BAD_REQUEST, "Bad Request", why);
    }
    let mut inner = emu.inner.lock().expect("state lock");
    let Some(e) = inner
        .ledger
        .iter_mut()
        .find(|e| e.file_no == file_no && !e.deleted)
    else {
        return json_error(
            &emu,
            StatusCode::NOT_FOUND,
            "Not Found",
            format!("File with ID {file_no} not found or access denied"),
        );
    };
    // The service keeps the extension when the new name has none.
    if !name.contains('.')
        && let Some((_, ext)) = e.name.rsplit_once('.')
    {
        name = format!("{name}.{ext}");
    }
    emu.storage.relink(&e.folder, &e.name, &e.folder, &name, &file_no);
    e.name = name;
    let e = e.clone();
    drop(inner);
    wrapped(&emu, workspace::renamed_file(&emu, &e))
}

pub(super) async fn rename_folder(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    Path(folder_no): Path<String>,
    body: Option<axum::Json<RenameBody>>,
) -> Response {
    emu.stats.renames.fetch_add(1, Ordering::Relaxed);
    if !emu.authorized(&headers) {
        return unauthorized(&emu);
    }
    let Some(name) = body.and_then(|b| b.0.name) else {
        return json_error(&emu, StatusCode::BAD_REQUEST, "Bad Request", "name is required");
    };
    if let Some(why) = bad_name(&name) {
        return json_error(&emu, StatusCode::BAD_REQUEST, "Bad Request", why);
    }
    let mut inner = emu.inner.lock().expect("state lock");
    let Some(old) = inner
        .folders
        .iter()
        .find(|(_, f)| f.folder_no == folder_no)
        .map(|(p, _)| p.clone())
    else {
        return json_error(&emu, StatusCode::NOT_FOUND, "Not Found", "Folder not found");
    };
    let new = match old.rsplit_once('/') {
        Some((parent, _)) => format!("{parent}/{name}"),
        None => name.clone(),
    };
    if new != old && inner.folders.contains_key(&new) {
        return json_error(
            &emu,
            StatusCode::CONFLICT,
            "Conflict",
            format!("a folder named {name} already exists there"),
        );
    }
    let moved = |p: &str| -> Option<String> {
        if p == old {
            Some(new.clone())
        } else {
            p.strip_prefix(&format!("{old}/"))
                .map(|rest| format!("{new}/{rest}"))
        }
    };
    // Folders: re-keyed, their parents' paths too.
    let folders: Vec<(String, FolderRec)> = inner.folders.drain().collect();
    for (path, mut rec) in folders {
        let path = moved(&path).unwrap_or(path);
        rec.parent = rec.parent.map(|p| moved(&p).unwrap_or(p));
        if path == new {
            rec.name = name.clone();
        }
        inner.folders.insert(path, rec);
    }
    for e in inner.ledger.iter_mut().filter(|e| !e.deleted) {
        if let Some(to) = moved(&e.folder) {
            emu.storage.relink(&e.folder, &e.name, &to, &e.name, &e.file_no);
            e.folder = to;
        }
    }
    let rec = inner.folders.get(&new).cloned();
    drop(inner);
    let Some(rec) = rec else {
        return json_error(&emu, StatusCode::NOT_FOUND, "Not Found", "Folder not found");
    };
    wrapped(
        &emu,
        json!({
            "id": format!("d_{}", rec.folder_no),
            "folder_no": rec.folder_no,
            "name": rec.name,
            "parent_folder": rec.parent,
            "path": new,
            "is_delete": false,
            "is_active": true,
            "created_at": workspace::iso(rec.created_at_ms),
            "updated_at": workspace::iso(now_ms()),
            "source": "api",
            "workspace": {"workspace_no": "EMULATOR"},
        }),
    )
}
