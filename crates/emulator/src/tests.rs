//! Emulator unit tests.

use super::sessions::validate_start;
use super::*;

#[test]
fn start_validation() {
    let ok = json!({"file_name": "a.mp4", "size": 10, "format": "video/mp4", "folder": "/x//y/"});
    let f = validate_start(&ok, 100).unwrap();
    assert_eq!(f.meta.folder, "x/y");
    for bad in [
        json!({"size": 10, "format": "video/mp4"}),
        json!({"file_name": "a", "size": -1, "format": "video/mp4"}),
        json!({"file_name": "a", "size": "10", "format": "video/mp4"}),
        json!({"file_name": "a/b", "size": 10, "format": "video/mp4"}),
        json!({"file_name": "a", "size": 10, "format": "mp4"}),
        json!({"file_name": "a", "size": 10, "format": "video/mp4", "tags": [1]}),
        json!({"file_name": "a", "size": 10, "format": "video/mp4", "ttl_seconds": 0}),
        json!({"file_name": "a", "size": 10, "format": "video/mp4", "folder": "../x"}),
    ] {
        assert_eq!(
            validate_start(&bad, 100).err().map(|e| e.0),
            Some(StatusCode::BAD_REQUEST),
            "{bad}"
        );
    }
    let big = json!({"file_name": "a", "size": 101, "format": "video/mp4"});
    assert_eq!(
        validate_start(&big, 100).err().map(|e| e.0),
        Some(StatusCode::PAYLOAD_TOO_LARGE)
    );
}

#[test]
fn faults_are_reproducible() {
    let draw = |seed| {
        let mut s: u64 = seed;
        (0..8).map(|_| splitmix(&mut s) % 10).collect::<Vec<_>>()
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
}
