//! The fleet's claim rules against a real PostgreSQL (a throwaway cluster):
//! one holder per file version however many nodes race, and a node whose
//! lease lapsed can neither complete nor record what another took over.

use std::time::Duration;

use autorender_test_support::postgres;

use super::pg::{Candidate, Claimed, Pg};
use crate::api::Session;
use crate::fileid::Fingerprint;
use crate::journal::DoneRecord;

fn cand(rel: &str) -> Candidate {
    Candidate {
        share: "renders".into(),
        rel: rel.into(),
        fp: Fingerprint {
            size: 10,
            mtime_ns: 1_700_000_000_000_000_000,
        },
    }
}

fn done(file_no: &str) -> DoneRecord {
    DoneRecord {
        fingerprint: cand("x").fp,
        identity: None,
        sha256: "ab".repeat(32),
        remote_folder: "renders".into(),
        remote_name: "a.exr".into(),
        file_no: file_no.into(),
        url: None,
        adopted: None,
        retire: None,
    }
}

async fn node(url: &str, name: &str, lease_ms: u64) -> Pg {
    let pg = Pg::new(url, name, Duration::from_millis(lease_ms), None).expect("pool");
    pg.migrate().await.expect("migrate");
    pg
}

/// A recorded session of `parts` parts.
fn session(id: &str, parts: usize) -> Session {
    Session {
        session_id: id.into(),
        uuid: None,
        part_size: 5,
        parts: vec![url::Url::parse("http://127.0.0.1/p").expect("url"); parts],
        expire_at: None,
        began_at_ms: 1,
    }
}

/// `b`'s claim on `f` once the holder's lease has lapsed: (id, token,
/// session carried over, whose lease it took over).
async fn take_over(
    b: &Pg,
    f: &[Candidate],
) -> (i64, i64, Option<crate::journal::SavedSession>, Option<String>) {
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Claimed::Mine {
            pg_id,
            token,
            saved,
            took_over,
        } = b.claim(f, 1).await.expect("claim").remove(0)
        {
            return (pg_id, token, saved, took_over);
        }
    }
    panic!("the file was not taken over once the holder's lease lapsed");
}

/// A throwaway cluster (None where PostgreSQL is missing, outside CI).
async fn cluster() -> Option<postgres::Postgres> {
    tokio::task::spawn_blocking(postgres::Postgres::start)
        .await
        .expect("start")
}

fn mine(c: &Claimed) -> Option<(i64, i64)> {
    match c {
        Claimed::Mine { pg_id, token, .. } => Some((*pg_id, *token)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_nodes_each_get_a_file_once_and_a_lapsed_holder_is_fenced_out() {
    let Some(server) = cluster().await else { return };
    let url = server.url();
    // Migrations are applied once even when nodes start together.
    let nodes = futures_util::future::join_all((0..6).map(|i| {
        let url = url.clone();
        async move { node(&url, &format!("n{i}"), 60_000).await }
    }))
    .await;

    // Six nodes claim the same 40 files at once: each file has one holder.
    let cands: Vec<Candidate> = (0..40).map(|i| cand(&format!("race/{i}.exr"))).collect();
    let results = futures_util::future::join_all(nodes.iter().map(|n| n.claim(&cands, 40))).await;
    let mut holders = vec![0; 40];
    for r in &results {
        for (i, c) in r.as_ref().expect("claim").iter().enumerate() {
            if mine(c).is_some() {
                holders[i] += 1;
            }
        }
    }
    assert!(
        holders.iter().all(|h| *h <= 1),
        "a file claimed twice: {holders:?}"
    );
    // Nodes registering the same versions in different orders at once
    // never deadlock (they insert in key order).
    for round in 0..3 {
        let fresh: Vec<Candidate> = (0..200).map(|i| cand(&format!("order{round}/{i}.exr"))).collect();
        let orders: Vec<Vec<Candidate>> = (0..6)
            .map(|k| {
                let mut c = fresh.clone();
                c.rotate_left(k * 33);
                if k % 2 == 1 {
                    c.reverse();
                }
                c
            })
            .collect();
        let results =
            futures_util::future::join_all(nodes.iter().zip(&orders).map(|(n, c)| n.claim(c, 5))).await;
        for r in results {
            r.expect("no deadlock between nodes claiming the same files in different orders");
        }
    }
    // A node that comes later cannot take a file one of them holds.
    let late = node(&url, "late", 60_000).await;
    let again = late.claim(&cands, 40).await.expect("claim");
    for (i, c) in again.iter().enumerate() {
        if holders[i] == 1 {
            assert!(mine(c).is_none(), "file {i} claimed by a second node while held");
        }
    }

    // A lapsed lease: node a stops renewing; node b takes over.
    let a = node(&url, "a", 1_000).await;
    let b = node(&url, "b", 30_000).await;
    let f = [cand("shot/a.exr")];
    let (id, token_a) = mine(&a.claim(&f, 1).await.expect("claim")[0]).expect("a holds it");
    let session = session("s1", 2);
    assert!(a.save_session(id, token_a, &session, "sha").await.expect("save"));
    a.part_done(id, token_a, 0).await.expect("part");
    assert!(matches!(
        b.claim(&f, 1).await.expect("claim")[0],
        Claimed::Busy { .. }
    ));
    let (id_b, token_b, saved, took_over) = take_over(&b, &f).await;
    assert_eq!(id_b, id);
    assert!(token_b > token_a);
    assert_eq!(took_over.as_deref(), Some("a"));
    let saved = saved.expect("a's session is carried over");
    assert_eq!(saved.session.session_id, "s1");
    assert_eq!(saved.done, vec![true, false], "a's stored part is known");

    // a wakes up: none of its fenced steps go through, and asked after a
    // failed upload, the database says the claim is no longer a's.
    assert!(!a.holds(id, token_a).await.expect("holds"));
    assert!(b.holds(id, token_b).await.expect("holds"));
    assert!(
        !a.completing(id, token_a, Duration::ZERO)
            .await
            .expect("completing")
    );
    assert!(!a.save_session(id, token_a, &session, "sha").await.expect("save"));
    assert!(!a.record_done(id, token_a, &done("1")).await.expect("done"));
    assert!(
        a.renew(&[(id, token_a)], 1, 0)
            .await
            .expect("renew")
            .0
            .contains(&id),
        "a learns it lost the file"
    );
    // b's go through, and then every node sees the file done.
    assert!(
        b.completing(id, token_b, Duration::from_secs(10))
            .await
            .expect("completing")
    );
    assert!(b.record_done(id, token_b, &done("7")).await.expect("done"));
    match &a.claim(&f, 1).await.expect("claim")[0] {
        Claimed::Done { record, node } => {
            assert_eq!(record.file_no, "7");
            assert_eq!(node, "b");
        }
        other => panic!("expected done, got {other:?}"),
    }
    let status = b.status().await.expect("status");
    assert_eq!(status["files"]["done"]["files"], 1, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_checks_the_servers_certificate() {
    let Some((server, ca)) = tokio::task::spawn_blocking(postgres::Postgres::start_tls)
        .await
        .expect("start")
    else {
        return;
    };
    let url = format!("{}?sslmode=require", server.url());
    // Trusting the studio's CA: connected over TLS.
    let pg = Pg::new(&url, "tls", Duration::from_secs(30), Some(&ca)).expect("pool");
    if let Err(e) = pg.migrate().await {
        panic!(
            "a TLS connection with the CA trusted failed: {e}\nserver log:\n{}",
            server.log()
        );
    }
    // The public roots alone do not vouch for this server: refused, and not
    // taken for an outage.
    let pg = Pg::new(&url, "tls", Duration::from_secs(30), None).expect("pool");
    match pg.migrate().await {
        Err(super::PgError::Failed(m)) => assert!(
            m.to_lowercase().contains("certificate") || m.contains("Unknown"),
            "{m}"
        ),
        other => panic!("an unknown CA must be refused, got {other:?}"),
    }
    // Without TLS the server refuses (only hostssl lines): the address says sslmode=disable.
    let plain = format!("{}?sslmode=disable", server.url());
    let pg = Pg::new(&plain, "plain", Duration::from_secs(30), None).expect("pool");
    assert!(pg.migrate().await.is_err(), "the server takes TLS only");
    // A CA file that is no PEM is named as such.
    let bogus = ca.with_file_name("ext.cnf");
    let e = Pg::new(&url, "tls", Duration::from_secs(30), Some(&bogus))
        .err()
        .expect("refused");
    assert!(
        e.contains("fleet.ca_file") && (e.contains("no certificate") || e.contains("not PEM")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_of_a_completing_session_sends_no_part_again() {
    let Some(server) = cluster().await else { return };
    let url = server.url();
    let a = node(&url, "a", 600).await;
    let b = node(&url, "b", 30_000).await;
    let f = [cand("shot/b.exr")];
    let (id, token_a) = mine(&a.claim(&f, 1).await.expect("claim")[0]).expect("a holds it");
    let session = session("s2", 3);
    assert!(a.save_session(id, token_a, &session, "sha").await.expect("save"));
    // Only the first part's mark reached the database before complete was
    // sent (marks are written without waiting); then a stalls for good.
    a.part_done(id, token_a, 0).await.expect("part");
    assert!(
        a.completing(id, token_a, Duration::ZERO)
            .await
            .expect("completing")
    );
    let (_, _, saved, _) = take_over(&b, &f).await;
    let saved = saved.expect("b took the completing session over");
    assert_eq!(saved.session.session_id, "s2", "the same session, not a new one");
    assert_eq!(
        saved.done,
        vec![true, true, true],
        "every part of a completing session is stored: none may be sent again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_under_one_node_name_are_told_apart_from_a_restart() {
    let Some(server) = cluster().await else { return };
    let url = server.url();
    // A restart: the old run's fresh heartbeat is seen once, on the first beat.
    let old = node(&url, "render-07", 30_000).await;
    assert_eq!(old.renew(&[], 100, 0).await.expect("beat").1, None);
    let new = node(&url, "render-07", 30_000).await;
    assert_eq!(new.renew(&[], 101, 0).await.expect("beat").1, Some(100));
    assert_eq!(
        new.renew(&[], 101, 0).await.expect("beat").1,
        None,
        "the old run is gone"
    );
    // Two live agents under one name see each other on every later beat.
    assert_eq!(old.renew(&[], 100, 0).await.expect("beat").1, Some(101));
    assert_eq!(new.renew(&[], 101, 0).await.expect("beat").1, Some(100));
    // The name of an agent that stopped cleanly is free at once.
    new.stop().await.expect("stop");
    let again = node(&url, "render-07", 30_000).await;
    assert_eq!(again.renew(&[], 102, 0).await.expect("beat").1, None);
}
