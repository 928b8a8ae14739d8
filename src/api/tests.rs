//! Client unit tests.

use super::answers::validate_start;
use super::*;

fn raw(part_size: i64, n: usize, scheme_host: &str) -> RawStart {
    RawStart {
        session_id: Some("s".into()),
        part_size: Some(part_size),
        parts: Some((0..n).map(|i| format!("{scheme_host}/p/{i}")).collect()),
        expire_at: None,
        uuid: None,
    }
}

#[test]
fn start_validation() {
    assert!(validate_start(raw(10, 4, "https://s3.example"), 35).is_ok());
    assert!(validate_start(raw(10, 3, "https://s3.example"), 35).is_err());
    assert!(validate_start(raw(10, 5, "https://s3.example"), 35).is_err());
    assert!(validate_start(raw(0, 1, "https://s3.example"), 35).is_err());
    assert!(validate_start(raw(-5, 1, "https://s3.example"), 35).is_err());
    assert!(validate_start(raw(10, 1, "http://s3.example"), 5).is_err());
    assert!(validate_start(raw(10, 1, "http://127.0.0.1:9"), 5).is_ok());
    assert!(validate_start(raw(10, 0, "https://x"), 0).is_ok());
    assert!(validate_start(raw(10, 1, "https://x"), 0).is_ok());
}

#[test]
fn part_ranges() {
    let s = validate_start(raw(10, 4, "https://x"), 35).unwrap();
    assert_eq!(s.part_range(0, 35), (0, 10));
    assert_eq!(s.part_range(3, 35), (30, 5));
}

#[test]
fn s3_errors() {
    let xml = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
    assert_eq!(s3_message(xml).unwrap(), "AccessDenied: Request has expired");
    assert_eq!(s3_message("nope"), None);
}

#[test]
fn classification() {
    assert!(ApiError::Network("x".into()).is_transient());
    assert!(
        ApiError::Server {
            status: 503,
            message: String::new()
        }
        .is_transient()
    );
    assert!(ApiError::Throttled { retry_after: None }.is_transient());
    assert!(
        !ApiError::Rejected {
            status: 400,
            message: String::new()
        }
        .is_transient()
    );
    assert!(
        !ApiError::Auth {
            status: 401,
            message: String::new()
        }
        .is_transient()
    );
    assert!(
        !ApiError::SessionExpired {
            status: 403,
            message: String::new()
        }
        .is_transient()
    );
}
