//! The outcome rule: what one upload's result does to its file, apart from
//! doing it. [`transition`] is pure (the facts it needs that cost a request
//! or a stat are asked first by the caller, only when the rule reads them);
//! `Agent::upload_result` applies the [`Step`]: journal writes, counters,
//! events and logs. The rule, as a table (first match wins):
//!
//! | result | step |
//! |---|---|
//! | stored (or adopted) | `Done` |
//! | paused by the user | `Wait`: pending, no attempt spent |
//! | key refused | `PauseAuth`: pending; every upload pauses (`--once` stops) |
//! | transient API error while the whole service is down (not `--once`) | `PauseOutage`: pending; the queue pauses |
//! | sent, answer lost, not listed yet | `Unresolved`: pending until `retry_in`, session kept |
//! | the file changed while sent | `Resettle` |
//! | a read failed because the file (or a folder on its way) is gone | `Gone` |
//! | anything else | `Fail`: one attempt spent; a refusal or a second altered copy fails at once; the session is kept when a resume can help (transient API error, read error) |

use std::time::Duration;

use crate::api::ApiError;
use crate::upload::{Outcome, UploadError};

/// What the rule needs beyond the result itself.
#[derive(Debug, Clone, Copy)]
pub(super) struct Facts {
    /// `run --once`: no outage pause (the run ends instead).
    pub once: bool,
    /// For a transient API error: does every upload fail (the service is
    /// down), not only this one? Asked only when the rule reads it
    /// ([`needs_service_check`]).
    pub service_down: bool,
    /// `agent.max_attempts`.
    pub max_attempts: u32,
}

/// What happens to the file (see the module's table).
#[derive(Debug)]
pub(super) enum Step {
    Done(Box<Outcome>),
    Wait,
    PauseAuth(UploadError),
    PauseOutage(ApiError),
    Unresolved(Duration),
    Resettle(String),
    Gone(String),
    Fail {
        error: UploadError,
        /// Its multipart session stays for a resume.
        keep_session: bool,
        /// How many attempts it gets in all (1: permanent, no retry).
        max_attempts: u32,
        permanent: bool,
        /// The failure's kind, as metrics count it.
        kind: &'static str,
    },
}

/// Whether the rule will read [`Facts::service_down`] for this result (a
/// transient API error outside `--once`): only then is the service asked.
pub(super) fn needs_service_check(result: &Result<Outcome, UploadError>, once: bool) -> bool {
    matches!(result, Err(UploadError::Api(a)) if a.is_transient() && !a_is_auth(a) && !once)
}

fn a_is_auth(a: &ApiError) -> bool {
    matches!(a, ApiError::Auth { .. })
}

/// The outcome rule (the module's table).
pub(super) fn transition(result: Result<Outcome, UploadError>, facts: Facts) -> Step {
    let e = match result {
        Ok(o) => return Step::Done(Box::new(o)),
        Err(e) => e,
    };
    match e {
        UploadError::Paused => Step::Wait,
        e if e.is_auth() => Step::PauseAuth(e),
        UploadError::Api(a) if a.is_transient() && !facts.once && facts.service_down => Step::PauseOutage(a),
        UploadError::Unresolved { retry_in } => Step::Unresolved(retry_in),
        UploadError::Changed(why) => Step::Resettle(why),
        UploadError::Io { kind, message, .. } if crate::upload::gone(kind) => Step::Gone(message),
        error => {
            let keep_session = matches!(&error, UploadError::Api(a) if a.is_transient())
                || matches!(error, UploadError::Io { .. });
            let permanent = error.is_permanent();
            let kind = match &error {
                UploadError::Refused { .. } => "refused",
                UploadError::Api(_) | UploadError::Unresolved { .. } => "service",
                UploadError::Io { .. } | UploadError::Changed(_) => "io",
                UploadError::Verify(_) | UploadError::Altered(_) => "verify",
                UploadError::Checkpoint(_) | UploadError::Paused => "journal",
            };
            Step::Fail {
                error,
                keep_session,
                max_attempts: if permanent { 1 } else { facts.max_attempts },
                permanent,
                kind,
            }
        }
    }
}

/// Per-file backoff between attempts: 5 s doubling to 15 min, with jitter
/// drawn from the milliseconds of `now_ms`.
pub(super) fn retry_delay(attempts: u32, now_ms: i64) -> Duration {
    let base = 5u64.saturating_mul(1u64 << attempts.min(8)).min(900);
    // Up to a quarter of the delay again, so files that failed together spread out.
    let jitter_ms = (now_ms.unsigned_abs() % 1000) * base / 4;
    Duration::from_secs(base) + Duration::from_millis(jitter_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn name(step: &Step) -> String {
        match step {
            Step::Done(_) => "done".into(),
            Step::Wait => "wait".into(),
            Step::PauseAuth(_) => "pause auth".into(),
            Step::PauseOutage(_) => "pause outage".into(),
            Step::Unresolved(d) => format!("unresolved {}s", d.as_secs()),
            Step::Resettle(_) => "resettle".into(),
            Step::Gone(_) => "gone".into(),
            Step::Fail {
                keep_session,
                max_attempts,
                permanent,
                kind,
                ..
            } => format!(
                "fail {kind} of {max_attempts}{}{}",
                if *keep_session { ", session kept" } else { "" },
                if *permanent { ", permanent" } else { "" }
            ),
        }
    }

    fn io(kind: std::io::ErrorKind) -> UploadError {
        UploadError::io(&PathBuf::from("/r/a.mov"), &std::io::Error::from(kind))
    }

    fn server() -> UploadError {
        UploadError::Api(ApiError::Server {
            status: 503,
            message: "busy".into(),
        })
    }

    #[test]
    fn the_outcome_rule_as_a_table() {
        let facts = Facts {
            once: false,
            service_down: false,
            max_attempts: 5,
        };
        let down = Facts {
            service_down: true,
            ..facts
        };
        let once_down = Facts { once: true, ..down };
        let auth = || {
            UploadError::Api(ApiError::Auth {
                status: 401,
                message: "no".into(),
            })
        };
        let table: Vec<(UploadError, Facts, &str)> = vec![
            (UploadError::Paused, down, "wait"),
            (auth(), down, "pause auth"),
            (auth(), once_down, "pause auth"),
            (server(), down, "pause outage"),
            (server(), facts, "fail service of 5, session kept"),
            (server(), once_down, "fail service of 5, session kept"),
            (
                UploadError::Unresolved {
                    retry_in: Duration::from_secs(20),
                },
                down,
                "unresolved 20s",
            ),
            (UploadError::Changed("mtime".into()), facts, "resettle"),
            (io(std::io::ErrorKind::NotFound), down, "gone"),
            (io(std::io::ErrorKind::NotADirectory), facts, "gone"),
            (
                io(std::io::ErrorKind::PermissionDenied),
                down,
                "fail io of 5, session kept",
            ),
            (
                UploadError::Refused {
                    status: 413,
                    message: "too large".into(),
                },
                down,
                "fail refused of 1, permanent",
            ),
            (
                UploadError::Altered("again".into()),
                facts,
                "fail verify of 1, permanent",
            ),
            (UploadError::Verify("size".into()), facts, "fail verify of 5"),
            (
                UploadError::Checkpoint(crate::upload::CheckpointError::store(std::io::Error::from(
                    std::io::ErrorKind::StorageFull,
                ))),
                facts,
                "fail journal of 5",
            ),
            (
                UploadError::Api(ApiError::Protocol("nonsense".into())),
                down,
                "fail service of 5",
            ),
        ];
        for (error, facts, want) in table {
            let shown = error.to_string();
            let result = Err(error);
            assert_eq!(
                needs_service_check(&result, facts.once),
                matches!(&result, Err(UploadError::Api(a)) if a.is_transient()) && !facts.once,
                "{shown}"
            );
            assert_eq!(name(&transition(result, facts)), want, "{shown}");
        }
    }

    #[test]
    fn retry_delay_grows_and_caps() {
        // Each step doubles the base (5 s, 10 s, 20 s …) and adds at most a
        // quarter of it as jitter, so consecutive delays never overlap.
        let now = crate::clock::system_ms();
        for n in 0..7 {
            let (a, b) = (retry_delay(n, now), retry_delay(n + 1, now));
            assert!(
                a >= Duration::from_secs(5 << n) && a <= Duration::from_secs(5 << n) * 5 / 4,
                "{n}: {a:?}"
            );
            assert!(b > a, "{n}: {a:?} then {b:?}");
        }
        assert!(retry_delay(20, now) >= Duration::from_secs(900));
        assert!(retry_delay(20, now) <= Duration::from_secs(900 + 225));
        // The jitter is at most a quarter of the base, whatever the clock says.
        assert_eq!(retry_delay(0, 1_000), Duration::from_secs(5));
        assert_eq!(retry_delay(0, 1_999), Duration::from_millis(5000 + 999 * 5 / 4));
    }
}
