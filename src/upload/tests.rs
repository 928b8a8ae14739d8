//! Uploader unit tests.

use super::*;

#[test]
fn url_lifetimes_grow_with_the_file_and_the_limit() {
    let hour = Duration::from_secs(3600);
    assert_eq!(url_lifetime(hour, None, 10 << 20), 3600, "small files: url_ttl");
    // 35 GiB at the assumed 2 MiB/s: ~5 h, asked for twice that.
    assert_eq!(url_lifetime(hour, None, 35 << 30), 35 * 1024 + 600);
    // 150 MiB under a 2 MiB/s limit with url_ttl = 60s: not 60 s.
    assert_eq!(
        url_lifetime(Duration::from_secs(60), Some(2.0 * 1048576.0), 150 << 20),
        750
    );
    assert_eq!(
        url_lifetime(hour, Some(1.0), 1 << 40),
        MAX_URL_TTL,
        "capped at 7 days"
    );
}
