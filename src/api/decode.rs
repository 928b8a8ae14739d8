//! Lenient decoding of the service's answers, in both readings of SPEC §1:
//! the docs' (answers wrapped in `{"success", "data"}`, `file_size`, `path` =
//! the folder) and the official SDKs' (flat answers, `size`, `path` = the
//! folder and the file name, `folder_no`, `is_duplicate`, `hash`, metadata in
//! listings). Every answer that describes a stored file goes through
//! [`decode_file`]; listings through [`decode_file_page`] and
//! [`decode_folders`]. Unknown fields are ignored; numbers may come as
//! strings and the other way round.
//!
//! Invariant: nothing here panics, whatever the bytes; a missing essential
//! field is an `Err` naming it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A file the workspace holds, as any answer describes it (complete, direct
/// upload, listing item, file details).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteFile {
    pub file_no: String,
    pub name: String,
    pub id: Option<String>,
    pub url: Option<String>,
    /// `path` exactly as the service gave it (a folder, or folder/name).
    pub path: Option<String>,
    /// The folder derived from `path` (a trailing `/<name>` stripped).
    pub folder: Option<String>,
    pub folder_no: Option<String>,
    /// Bytes stored (`size` or `file_size`).
    pub size: Option<u64>,
    /// Creation time, unix milliseconds (`created_at` or `uploaded_at`).
    pub created_at_ms: Option<i64>,
    /// `metadata.sha256`, where the answer carries metadata.
    pub sha256: Option<String>,
    /// Whether the answer carried a metadata object at all.
    pub has_metadata: bool,
    pub hash: Option<String>,
    pub is_duplicate: Option<bool>,
}

impl RemoteFile {
    /// Does this file sit in `folder` (normalised, "" = root)? Both readings
    /// of `path` are accepted; without a `path` the caller's folder filter
    /// is trusted.
    pub fn in_folder(&self, folder: &str) -> bool {
        let Some(p) = &self.path else {
            return true;
        };
        let p = p.trim_matches('/');
        let with_name = if folder.is_empty() {
            self.name.clone()
        } else {
            format!("{folder}/{}", self.name)
        };
        p == folder || p == with_name
    }
}

/// One page of `GET /api/v1/files`.
#[derive(Debug, Clone, Default)]
pub struct FilePage {
    pub files: Vec<RemoteFile>,
    /// More pages follow (`meta.hasNext`, `is_page_next`, or page < pages).
    pub has_next: Option<bool>,
    pub total: Option<u64>,
}

/// One folder of `GET /api/v1/folders`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFolder {
    pub folder_no: String,
    pub name: String,
}

/// The object an answer is about: `data` when the answer is wrapped
/// (docs), the answer itself when flat (SDKs).
fn unwrap_data(value: &Value) -> &Value {
    match value.get("data") {
        Some(inner @ Value::Object(_)) => inner,
        _ => value,
    }
}

fn as_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn as_u64(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_bool(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A time as the service may send it: RFC 3339 (`2026-03-27T14:58:53.795Z`,
/// with or without fraction or offset) or a unix number (seconds, or
/// milliseconds when it is that large). Unix milliseconds.
pub fn parse_time_ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => {
            let f = n.as_f64()?;
            Some(if f.abs() >= 1e11 {
                f as i64
            } else {
                (f * 1000.0) as i64
            })
        }
        Value::String(s) => {
            let s = s.trim();
            if let Ok(n) = s.parse::<f64>() {
                return parse_time_ms(&serde_json::json!(n));
            }
            parse_rfc3339_ms(s)
        }
        _ => None,
    }
}

fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    // humantime reads the UTC forms; an explicit offset is applied here.
    let (base, offset_s) = match s.len().checked_sub(6).map(|i| (i, s.as_bytes()[i])) {
        Some((i, b'+' | b'-')) if s[i + 1..].len() == 5 && s.as_bytes()[i + 3] == b':' => {
            let sign = if s.as_bytes()[i] == b'+' { 1 } else { -1 };
            let h: i64 = s[i + 1..i + 3].parse().ok()?;
            let m: i64 = s[i + 4..i + 6].parse().ok()?;
            (format!("{}Z", &s[..i]), sign * (h * 3600 + m * 60))
        }
        _ => (s.replace(' ', "T"), 0),
    };
    let t = humantime::parse_rfc3339_weak(base.trim_end_matches('Z')).ok()?;
    // humantime reads no year before 1970, so `t` is never before the epoch.
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64;
    Some(ms - offset_s * 1000)
}

fn metadata_object(v: Option<&Value>) -> Option<serde_json::Map<String, Value>> {
    match v? {
        Value::Object(m) => Some(m.clone()),
        // Some answers carry metadata as the JSON string it was sent as.
        Value::String(s) => match serde_json::from_str(s) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        },
        _ => None,
    }
}

/// What makes an answer unreadable as a file or a listing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the answer is not a JSON object")]
    NotAnObject,
    #[error("the answer has no file_no")]
    NoFileNo,
    #[error("the listing has no `files` array")]
    NoFiles,
    #[error("the folder listing has no `folders` array")]
    NoFolders,
    #[error("the answer has no folder_no")]
    NoFolderNo,
}

/// Decodes a stored file from any answer that describes one. `file_no` is
/// required; everything else is optional.
pub fn decode_file(value: &Value) -> Result<RemoteFile, DecodeError> {
    let v = unwrap_data(value);
    if !v.is_object() {
        return Err(DecodeError::NotAnObject);
    }
    let file_no = as_string(v.get("file_no"))
        .or_else(|| as_string(v.get("fileNo")))
        .ok_or(DecodeError::NoFileNo)?;
    let name = as_string(v.get("name"))
        .or_else(|| as_string(v.get("file_name")))
        .unwrap_or_default();
    let path = match v.get("path") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let folder = path.as_deref().map(|p| derive_folder(p, &name));
    // `meta_data` in the docs' rename answer.
    let metadata = metadata_object(v.get("metadata").or_else(|| v.get("meta_data")));
    let sha256 = metadata
        .as_ref()
        .and_then(|m| m.get("sha256"))
        .and_then(Value::as_str)
        .map(|s| s.trim().to_ascii_lowercase());
    Ok(RemoteFile {
        file_no,
        id: as_string(v.get("id")),
        url: as_string(v.get("url")),
        folder_no: as_string(v.get("folder_no")),
        size: as_u64(v.get("size")).or_else(|| as_u64(v.get("file_size"))),
        created_at_ms: v
            .get("created_at")
            .or_else(|| v.get("uploaded_at"))
            .and_then(parse_time_ms),
        has_metadata: metadata.is_some(),
        sha256,
        hash: as_string(v.get("hash")),
        is_duplicate: as_bool(v.get("is_duplicate")),
        name,
        path,
        folder,
    })
}

/// The folder a `path` names: the path itself (docs) or the path without its
/// trailing `/<name>` (SDKs). Leading and trailing `/` are dropped.
pub fn derive_folder(path: &str, name: &str) -> String {
    let p = path.trim_matches('/');
    if name.is_empty() {
        return p.to_string();
    }
    if p == name {
        return String::new();
    }
    match p.strip_suffix(name).and_then(|rest| rest.strip_suffix('/')) {
        Some(folder) => folder.to_string(),
        None => p.to_string(),
    }
}

/// Decodes one listing page: `{"files": [...], "meta": {...}}` (docs), or
/// `{"items": [...], "is_page_next": ...}` (an SDK), wrapped in `data` or
/// not, or a bare array. Items that cannot be decoded are skipped, not fatal.
pub fn decode_file_page(value: &Value) -> Result<FilePage, DecodeError> {
    let v = unwrap_data(value);
    let items = match v {
        Value::Array(a) => a,
        _ => match v.get("files").or_else(|| v.get("items")) {
            Some(Value::Array(a)) => a,
            _ => return Err(DecodeError::NoFiles),
        },
    };
    let files = items.iter().filter_map(|i| decode_file(i).ok()).collect();
    let meta = v.get("meta").or_else(|| value.get("meta")).unwrap_or(v);
    let has_next = as_bool(meta.get("hasNext"))
        .or_else(|| as_bool(meta.get("has_next")))
        .or_else(|| as_bool(meta.get("is_page_next")))
        .or_else(|| {
            let page = as_u64(meta.get("page"))?;
            let pages = as_u64(meta.get("total_pages")).or_else(|| as_u64(meta.get("totalPages")))?;
            Some(page < pages)
        });
    let total = as_u64(meta.get("total")).or_else(|| as_u64(meta.get("total_count")));
    Ok(FilePage {
        files,
        has_next,
        total,
    })
}

/// Decodes `GET /api/v1/folders`: `{"folders": [...]}`, `data` wrapped or
/// not, `items`, or a bare array.
pub fn decode_folders(value: &Value) -> Result<Vec<RemoteFolder>, DecodeError> {
    let v = unwrap_data(value);
    let items = match v {
        Value::Array(a) => a,
        _ => match v.get("folders").or_else(|| v.get("items")) {
            Some(Value::Array(a)) => a,
            _ => match value.get("data") {
                Some(Value::Array(a)) => a,
                _ => return Err(DecodeError::NoFolders),
            },
        },
    };
    Ok(items
        .iter()
        .filter_map(|f| {
            Some(RemoteFolder {
                folder_no: as_string(f.get("folder_no")).or_else(|| as_string(f.get("folderNo")))?,
                name: as_string(f.get("name")).or_else(|| as_string(f.get("folder_name")))?,
            })
        })
        .collect())
}

/// Decodes one folder (a rename's answer), `data` wrapped or not.
pub fn decode_folder(value: &Value) -> Result<RemoteFolder, DecodeError> {
    let f = unwrap_data(value);
    if !f.is_object() {
        return Err(DecodeError::NotAnObject);
    }
    Ok(RemoteFolder {
        folder_no: as_string(f.get("folder_no"))
            .or_else(|| as_string(f.get("folderNo")))
            .ok_or(DecodeError::NoFolderNo)?,
        name: as_string(f.get("name"))
            .or_else(|| as_string(f.get("folder_name")))
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn complete_in_the_docs_reading() {
        let v = json!({"success": true, "data": {"id": "abc", "file_no": "2353377462", "name": "big.mp4",
            "url": "https://cdn/x/big.mp4", "path": "uploads/videos", "width": null, "height": null,
            "format": "mp4", "file_size": 1048576, "workspace_no": "FWA7"}});
        let f = decode_file(&v).unwrap();
        assert_eq!(f.file_no, "2353377462");
        assert_eq!(f.size, Some(1_048_576));
        assert_eq!(f.folder.as_deref(), Some("uploads/videos"));
        assert!(f.in_folder("uploads/videos"));
        assert!(!f.has_metadata);
    }

    #[test]
    fn complete_in_the_sdk_reading() {
        let v = json!({"id": "u-1", "created_at": "2026-03-27T14:58:53.795Z", "custom_id": null,
            "extension": "video", "file_no": 2353377462u64, "folder_no": "sD1L", "height": null,
            "is_duplicate": false, "metadata": {"sha256": "ABCDEF"}, "mime_type": "video/mp4",
            "name": "big.mp4", "path": "uploads/videos/big.mp4", "size": 1048576, "tags": ["a"],
            "thumbnail": null, "upload_source": "api", "url": "https://cdn/big.mp4", "width": null,
            "workspace_id": "w", "hash": "h1", "unknown_field": {"nested": [1, 2]}});
        let f = decode_file(&v).unwrap();
        assert_eq!(f.file_no, "2353377462");
        assert_eq!(f.size, Some(1_048_576));
        assert_eq!(f.folder.as_deref(), Some("uploads/videos"));
        assert_eq!(f.sha256.as_deref(), Some("abcdef"));
        assert_eq!(f.hash.as_deref(), Some("h1"));
        assert_eq!(f.is_duplicate, Some(false));
        assert_eq!(f.folder_no.as_deref(), Some("sD1L"));
        assert_eq!(f.created_at_ms, Some(1_774_623_533_795));
        assert!(f.in_folder("uploads/videos"));
        assert!(!f.in_folder("uploads"));
    }

    #[test]
    fn file_details_in_the_docs_reading() {
        let v = json!({"success": true, "data": {"id": "9746", "file_no": "2338045312", "name": "a.png",
            "url": "https://cdn/a.png", "path": null, "format": "PNG", "size": 194141,
            "uploaded_at": "2026-03-27T14:56:20.511Z", "folder": null}});
        let f = decode_file(&v).unwrap();
        assert_eq!(f.size, Some(194_141));
        assert_eq!(f.path, None);
        assert_eq!(f.created_at_ms, Some(1_774_623_380_511));
    }

    #[test]
    fn missing_file_no_is_an_error() {
        assert!(decode_file(&json!({"success": true, "data": {"name": "x"}})).is_err());
        assert!(decode_file(&json!([1, 2])).is_err());
        assert!(decode_file(&json!("x")).is_err());
    }

    #[test]
    fn folder_derivation() {
        for (path, name, folder) in [
            ("uploads/videos", "big.mp4", "uploads/videos"),
            ("uploads/videos/big.mp4", "big.mp4", "uploads/videos"),
            ("/uploads/videos/", "big.mp4", "uploads/videos"),
            ("big.mp4", "big.mp4", ""),
            ("", "big.mp4", ""),
            ("a/xbig.mp4", "big.mp4", "a/xbig.mp4"),
        ] {
            assert_eq!(derive_folder(path, name), folder, "{path} {name}");
        }
    }

    #[test]
    fn in_folder_accepts_both_readings_and_only_them() {
        let mut f = decode_file(&json!({"file_no": "1", "name": "x.mp4", "path": "a/b"})).unwrap();
        assert!(f.in_folder("a/b"));
        f.path = Some("a/b/x.mp4".into());
        assert!(f.in_folder("a/b"));
        assert!(!f.in_folder("a"));
        f.path = Some("x.mp4".into());
        assert!(f.in_folder(""));
        f.path = None;
        assert!(f.in_folder("anything"));
    }

    #[test]
    fn times() {
        assert_eq!(parse_time_ms(&json!(1_700_000_000)), Some(1_700_000_000_000));
        assert_eq!(
            parse_time_ms(&json!(1_700_000_000_123i64)),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            parse_time_ms(&json!("2026-03-27T14:58:53Z")),
            Some(1_774_623_533_000)
        );
        assert_eq!(
            parse_time_ms(&json!("2026-03-27T16:58:53+02:00")),
            Some(1_774_623_533_000)
        );
        assert_eq!(
            parse_time_ms(&json!("2026-03-27T14:58:53.5")),
            Some(1_774_623_533_500)
        );
        assert_eq!(parse_time_ms(&json!("yesterday")), None);
        assert_eq!(parse_time_ms(&json!(null)), None);
    }

    #[test]
    fn listing_pages_in_every_shape() {
        let docs = json!({"files": [{"file_no": "2353377462", "name": "ar-juice.jpg", "file_size": 1278975,
            "created_at": "2026-03-27T14:58:53.795Z", "path": "ar-juice.jpg"}],
            "meta": {"page": 1, "limit": 20, "total": 2, "hasNext": false, "hasPrev": false}});
        let p = decode_file_page(&docs).unwrap();
        assert_eq!(p.files.len(), 1);
        assert_eq!(p.has_next, Some(false));
        assert_eq!(p.total, Some(2));
        assert!(p.files[0].in_folder(""));
        let sdk = json!({"items": [{"file_no": "1", "name": "a", "size": 3, "metadata": null},
            {"no_file_no": true}], "is_page_next": true, "page": 1, "limit": 1, "total_count": 9, "total_pages": 9});
        let p = decode_file_page(&sdk).unwrap();
        assert_eq!(p.files.len(), 1, "undecodable items are skipped");
        assert_eq!(p.has_next, Some(true));
        assert_eq!(p.total, Some(9));
        let paged = json!({"data": {"files": []}, "meta": {"page": 2, "total_pages": 3}});
        assert_eq!(decode_file_page(&paged).unwrap().has_next, Some(true));
        assert!(decode_file_page(&json!({"success": true})).is_err());
    }

    #[test]
    fn folders_in_every_shape() {
        let docs = json!({"folders": [{"folder_no": "4bu7", "name": "demo", "total_items": 0},
            {"folder_no": 538, "name": "demo2"}, {"name": "no number"}]});
        let f = decode_folders(&docs).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].folder_no, "538");
        assert_eq!(
            decode_folders(&json!({"data": [{"folder_no": "x", "name": "y"}]}))
                .unwrap()
                .len(),
            1
        );
        assert!(decode_folders(&json!({"files": []})).is_err());
    }

    #[test]
    fn lenient_scalars() {
        assert_eq!(as_string(Some(&json!(""))), None, "an empty id is no id");
        assert_eq!(as_string(Some(&json!(538))), Some("538".into()));
        assert_eq!(as_u64(Some(&json!("12"))), Some(12));
        assert_eq!(as_u64(Some(&json!(3.0))), Some(3));
        assert_eq!(as_u64(Some(&json!(0.0))), Some(0));
        assert_eq!(as_u64(Some(&json!(-1.0))), None);
        assert_eq!(as_u64(Some(&json!(2.5))), None);
        assert_eq!(as_bool(Some(&json!("true"))), Some(true));
        assert_eq!(as_bool(Some(&json!("false"))), Some(false));
        assert_eq!(as_bool(Some(&json!("yes"))), None);
    }

    #[test]
    fn times_with_offsets_fractions_and_before_1970() {
        let t = Some(1_774_623_533_000);
        assert_eq!(parse_time_ms(&json!("2026-03-27T09:28:53-05:30")), t);
        assert_eq!(parse_time_ms(&json!("2026-03-27T20:28:53+05:30")), t);
        assert_eq!(
            parse_time_ms(&json!("2026-03-27T16:58:53.5+02:00")),
            Some(1_774_623_533_500)
        );
        // An offset can take a time just after 1970 to before it.
        assert_eq!(
            parse_time_ms(&json!("1970-01-01T00:30:00+01:00")),
            Some(-1_800_000)
        );
        // humantime reads no year before 1970.
        assert_eq!(parse_time_ms(&json!("1969-12-31T23:59:59Z")), None);
    }

    #[test]
    fn bare_arrays_and_the_last_page() {
        let p = decode_file_page(&json!([{"file_no": "1", "name": "a", "size": 3}])).unwrap();
        assert_eq!(p.files.len(), 1);
        let last = json!({"files": [], "meta": {"page": 3, "total_pages": 3}});
        assert_eq!(decode_file_page(&last).unwrap().has_next, Some(false));
        assert_eq!(
            decode_folders(&json!([{"folder_no": "x", "name": "y"}]))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn metadata_as_a_json_string() {
        let f =
            decode_file(&json!({"file_no": "1", "name": "a", "metadata": "{\"sha256\":\"ab\"}"})).unwrap();
        assert_eq!(f.sha256.as_deref(), Some("ab"));
    }
}
