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

const MIB: i64 = 5 * 1024 * 1024;

#[test]
fn start_validation() {
    let m = MIB as u64;
    assert!(validate_start(raw(MIB, 4, "https://s3.example"), 3 * m + 5).is_ok());
    assert!(validate_start(raw(MIB, 3, "https://s3.example"), 3 * m + 5).is_err());
    assert!(validate_start(raw(MIB, 5, "https://s3.example"), 3 * m + 5).is_err());
    // Parts under 5 MiB (but a single one) and more than 10,000 parts are
    // refused: they would only make a flood of requests.
    let tiny = validate_start(raw(10, 4, "https://s3.example"), 35).unwrap_err();
    assert!(tiny.to_string().contains("at least 5242880"), "{tiny}");
    assert!(
        validate_start(raw(10, 1, "https://s3.example"), 10).is_ok(),
        "one small part"
    );
    let many = validate_start(raw(1, 10_001, "https://s3.example"), 10_001).unwrap_err();
    assert!(many.to_string().contains("at most 10000 parts"), "{many}");
    assert!(validate_start(raw(0, 1, "https://s3.example"), 35).is_err());
    assert!(validate_start(raw(-5, 1, "https://s3.example"), 35).is_err());
    assert!(validate_start(raw(10, 1, "http://s3.example"), 5).is_err());
    assert!(validate_start(raw(10, 1, "http://127.0.0.1:9"), 5).is_ok());
    assert!(validate_start(raw(10, 0, "https://x"), 0).is_ok());
    assert!(validate_start(raw(10, 1, "https://x"), 0).is_ok());
}

#[test]
fn part_ranges() {
    let m = MIB as u64;
    let s = validate_start(raw(MIB, 4, "https://x"), 3 * m + 5).unwrap();
    assert_eq!(s.part_range(0, 3 * m + 5), (0, m));
    assert_eq!(s.part_range(3, 3 * m + 5), (3 * m, 5));
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
