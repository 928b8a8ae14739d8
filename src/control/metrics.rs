//! `GET /metrics`: Prometheus text format (version 0.0.4), names prefixed
//! `autorender_sync_`. Counters come from the running agent; gauges of
//! files per state, in flight and roots per watch mode from the status
//! document, so they agree with `status`.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{Shared, status_document};

const STATES: [&str; 11] = [
    "settling",
    "growing",
    "pending",
    "uploading",
    "reconciling",
    "interrupted",
    "failed",
    "done",
    "gone",
    "skipped",
    "held",
];

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP autorender_sync_{name} {help}");
    let _ = writeln!(out, "# TYPE autorender_sync_{name} {kind}");
}

/// A label value, escaped as the text format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The metrics text for counters from `live` and gauges from `doc`.
pub(super) fn render(live: &super::Live, doc: &Value) -> String {
    let mut out = String::new();
    for (name, help, value) in [
        (
            "files_uploaded_total",
            "Files uploaded since the agent started.",
            &live.files_uploaded,
        ),
        (
            "bytes_uploaded_total",
            "Bytes of the files uploaded since the agent started.",
            &live.bytes_uploaded,
        ),
        (
            "files_failed_total",
            "Files marked failed since the agent started.",
            &live.files_failed,
        ),
        (
            "retries_total",
            "Failed attempts that will be tried again.",
            &live.retries,
        ),
    ] {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "autorender_sync_{name} {}", value.load(Ordering::Relaxed));
    }
    family(
        &mut out,
        "reconciliations_total",
        "counter",
        "Uploads settled by asking the workspace instead of sending (an unknown outcome, or a copy already there).",
    );
    let _ = writeln!(
        out,
        "autorender_sync_reconciliations_total {}",
        live.reconciliations.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "failures_total",
        "counter",
        "Failed upload attempts, by reason (refused, service, io, verify, journal).",
    );
    let failures = live.failures.lock().expect("failures lock").clone();
    for reason in ["refused", "service", "io", "verify", "journal"] {
        let n = failures.get(reason).copied().unwrap_or(0);
        let _ = writeln!(out, "autorender_sync_failures_total{{reason=\"{reason}\"}} {n}");
    }
    family(
        &mut out,
        "upload_duration_seconds",
        "histogram",
        "How long each upload took, from its start to its recorded result.",
    );
    let mut cumulative = 0u64;
    for (i, bound) in super::DURATION_BUCKETS.iter().enumerate() {
        cumulative += live.durations[i].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "autorender_sync_upload_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += live.durations[super::DURATION_BUCKETS.len()].load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "autorender_sync_upload_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        out,
        "autorender_sync_upload_duration_seconds_sum {}",
        live.duration_sum_ms.load(Ordering::Relaxed) as f64 / 1000.0
    );
    let _ = writeln!(out, "autorender_sync_upload_duration_seconds_count {cumulative}");
    family(
        &mut out,
        "paused",
        "gauge",
        "1 while uploads are held back (paused by the user, key rejected, service unreachable).",
    );
    let _ = writeln!(
        out,
        "autorender_sync_paused {}",
        u8::from(live.paused.load(Ordering::Relaxed))
    );
    family(
        &mut out,
        "last_success_timestamp_seconds",
        "gauge",
        "When the last upload was recorded (unix seconds; 0: none yet).",
    );
    let _ = writeln!(
        out,
        "autorender_sync_last_success_timestamp_seconds {}",
        live.last_success_ms.load(Ordering::Relaxed) as f64 / 1000.0
    );
    family(&mut out, "files", "gauge", "Files per state, per watched folder.");
    for root in doc["roots"].as_array().into_iter().flatten() {
        let r = label(root["root"].as_str().unwrap_or(""));
        for state in STATES {
            let n = root[state].as_i64().unwrap_or(0);
            let _ = writeln!(out, "autorender_sync_files{{root=\"{r}\",state=\"{state}\"}} {n}");
        }
    }
    let flights: Vec<&Value> = doc["in_flight"].as_array().into_iter().flatten().collect();
    family(&mut out, "in_flight_files", "gauge", "Uploads in flight.");
    let _ = writeln!(out, "autorender_sync_in_flight_files {}", flights.len());
    family(
        &mut out,
        "in_flight_bytes",
        "gauge",
        "Bytes still to send of the uploads in flight.",
    );
    let left: u64 = flights
        .iter()
        .map(|f| {
            f["size"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(f["sent"].as_u64().unwrap_or(0))
        })
        .sum();
    let _ = writeln!(out, "autorender_sync_in_flight_bytes {left}");
    let c = &doc["agent"]["concurrency"];
    for (name, key, help) in [
        (
            "concurrency_limit",
            "limit",
            "Requests with a body (parts, direct uploads) allowed in flight now: the adaptive controller's \
             limit, or a fixed concurrent_parts (per file).",
        ),
        (
            "concurrency_in_flight",
            "in_flight",
            "Requests with a body in flight now.",
        ),
    ] {
        family(&mut out, name, "gauge", help);
        let _ = writeln!(out, "autorender_sync_{name} {}", c[key].as_u64().unwrap_or(0));
    }
    family(
        &mut out,
        "concurrency_changes_total",
        "counter",
        "Changes of the adaptive limit, by why (growing, slowed, errors, ceiling).",
    );
    for why in ["growing", "slowed", "errors", "ceiling"] {
        let n = c["changes"][why].as_u64().unwrap_or(0);
        let _ = writeln!(
            out,
            "autorender_sync_concurrency_changes_total{{reason=\"{why}\"}} {n}"
        );
    }
    family(&mut out, "roots", "gauge", "Watched folders per watch mode.");
    let mut modes: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for root in doc["roots"].as_array().into_iter().flatten() {
        let mode = root["watch"].as_str().unwrap_or("none");
        let mode = if mode.starts_with("polling") {
            "polling"
        } else {
            mode
        };
        *modes.entry(mode.to_string()).or_default() += 1;
    }
    for (mode, n) in modes {
        let _ = writeln!(out, "autorender_sync_roots{{mode=\"{}\"}} {n}", label(&mode));
    }
    out
}

pub(super) async fn serve(State(s): State<Shared>) -> Response {
    let doc = status_document(&s).await.unwrap_or(Value::Null);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        render(&s.live, &doc),
    )
        .into_response()
}
