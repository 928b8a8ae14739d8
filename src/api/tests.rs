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

/// The emulator in this process, answering in `answers`; its base URL and
/// the sender that stops it.
async fn emulator(
    answers: crate::emulator::Answers,
    store: &std::path::Path,
) -> (Url, tokio::sync::oneshot::Sender<()>) {
    let mut opts = crate::emulator::Options::new("k", store.to_path_buf());
    opts.answers = answers;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(crate::emulator::serve(opts, listener, async move {
        let _ = stopped.await;
    }));
    (url, stop)
}

#[tokio::test]
async fn files_and_folders_are_renamed_in_either_reading() {
    use crate::emulator::Answers;
    for answers in [Answers::Docs, Answers::Sdk] {
        let tmp = tempfile::tempdir().unwrap();
        let (base, _stop) = emulator(answers, tmp.path()).await;
        let client = Client::new(
            base.clone(),
            crate::secrets::ApiKey::new("k"),
            Duration::from_secs(10),
        )
        .unwrap();
        let form = reqwest::multipart::Form::new()
            .text("file_name", "v03.mov")
            .text("folder", "masters/reel1")
            .part(
                "file",
                reqwest::multipart::Part::bytes(b"frames".to_vec()).file_name("v03.mov"),
            );
        let up = reqwest::Client::new()
            .post(base.join("/api/v1/uploads").unwrap())
            .bearer_auth("k")
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(up.status(), 200, "{answers:?}");
        let stored = decode_file(&up.json::<serde_json::Value>().await.unwrap()).unwrap();
        // A name without an extension keeps the old one, as the docs say.
        let renamed = client.rename_file(&stored.file_no, "v03_final").await.unwrap();
        assert_eq!(renamed.name, "v03_final.mov", "{answers:?}");
        assert_eq!(renamed.file_no, stored.file_no);
        assert_eq!(
            renamed.folder.as_deref(),
            Some("masters/reel1"),
            "{answers:?}: {renamed:?}"
        );
        let page = client.list_files(None, None, 1, 10).await.unwrap();
        assert_eq!(page.files[0].name, "v03_final.mov");
        // The folder: its files move with it.
        let top = client.list_folders(None).await.unwrap();
        let masters = top.iter().find(|f| f.name == "masters").unwrap();
        let reels = client.list_folders(Some(&masters.folder_no)).await.unwrap();
        let reel = reels.iter().find(|f| f.name == "reel1").unwrap();
        let folder = client.rename_folder(&reel.folder_no, "reel_one").await.unwrap();
        assert_eq!(
            (folder.folder_no.as_str(), folder.name.as_str()),
            (reel.folder_no.as_str(), "reel_one")
        );
        let details = client.file_details(&stored.file_no).await.unwrap().unwrap();
        assert_eq!(
            details.folder.as_deref(),
            Some("masters/reel_one"),
            "{answers:?}: {details:?}"
        );
        // What the service refuses is an error that says so, not a panic.
        let e = client.rename_file(&stored.file_no, "a/b").await.unwrap_err();
        assert!(e.to_string().contains("separator"), "{e}");
        let e = client.rename_file("nope", "x").await.unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
        assert!(client.rename_folder("nope", "x").await.is_err());
    }
}
