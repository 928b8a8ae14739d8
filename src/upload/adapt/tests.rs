//! The controller as a pure unit: a simulated link's request times in,
//! decisions out, on tokio's paused clock.

use super::*;

const MIB: f64 = 1048576.0;

/// A link: each request waits `latency` s, then its body moves at
/// `min(stream, link / n)` bytes a second with `n` bodies moving.
struct Link {
    latency: f64,
    stream: f64,
    link: f64,
}

struct Req {
    f: Flying,
    left: f64,
    wait: f64,
}

/// Runs `ctl` with always more requests of `bytes` waiting than it allows,
/// for `secs` (the link given by `link_at(t)`), stepping 10 ms; returns
/// the changes with their time and the bytes moved.
fn simulate(
    ctl: &mut Controller,
    bytes: u64,
    secs: f64,
    link_at: impl Fn(f64) -> Link,
) -> (Vec<(f64, Change)>, f64) {
    let t0 = Instant::now();
    let dt = 0.01;
    let mut flying: Vec<Req> = Vec::new();
    let mut changes = Vec::new();
    let mut moved = 0.0;
    let mut t = 0.0;
    while t < secs {
        let now = t0 + Duration::from_secs_f64(t);
        let link = link_at(t);
        while flying.len() < ctl.limit() {
            flying.push(Req {
                f: Flying {
                    began: now,
                    bytes,
                    epoch: ctl.epoch(),
                    since: ctl.occupancy(now),
                },
                left: bytes as f64,
                wait: link.latency,
            });
            ctl.in_flight(flying.len(), now);
        }
        let moving = flying.iter().filter(|r| r.wait <= 0.0).count().max(1) as f64;
        let rate = link.stream.min(link.link / moving);
        for r in flying.iter_mut() {
            if r.wait > 0.0 {
                r.wait -= dt;
            } else {
                let step = (rate * dt).min(r.left);
                r.left -= step;
                moved += step;
            }
        }
        t += dt;
        let now = t0 + Duration::from_secs_f64(t);
        let (done, rest): (Vec<Req>, Vec<Req>) =
            flying.into_iter().partition(|r| r.left <= 0.0 && r.wait <= 0.0);
        flying = rest;
        let views: Vec<Flying> = flying.iter().map(|r| r.f).collect();
        for r in done {
            if let Some(c) = ctl.finished(r.f, &views, now) {
                changes.push((t, c));
            }
        }
        ctl.in_flight(flying.len(), now);
        if let Some(c) = ctl.tick(&views, now) {
            changes.push((t, c));
        }
    }
    (changes, moved)
}

/// A request of `bytes` begun at `began` in `epoch`, when the controller
/// has been told of `n` in flight since it started.
fn req(ctl: &mut Controller, began: Instant, bytes: u64, epoch: u64, n: usize) -> Flying {
    ctl.in_flight(n, began);
    Flying {
        began,
        bytes,
        epoch,
        since: ctl.occupancy(began),
    }
}

/// The limits the controller set after `t` seconds.
fn limits_after(changes: &[(f64, Change)], t: f64) -> Vec<usize> {
    changes
        .iter()
        .filter(|(at, _)| *at > t)
        .map(|(_, c)| c.to)
        .collect()
}

fn pipe(link_mib: f64) -> Link {
    Link {
        latency: 0.1,
        stream: 2.0 * MIB,
        link: link_mib * MIB,
    }
}

#[tokio::test(start_paused = true)]
async fn a_link_with_room_takes_the_limit_to_the_ceiling() {
    // 80 MiB/s of 2 MiB/s streams fits 40; the ceiling is 32.
    let mut ctl = Controller::new(32, Instant::now());
    let (changes, _) = simulate(&mut ctl, 10 << 20, 30.0, |_| pipe(80.0));
    let whys: Vec<(usize, usize, Why)> = changes.iter().map(|(_, c)| (c.from, c.to, c.why)).collect();
    assert_eq!(
        whys,
        [
            (8, 16, Why::Growing),
            (16, 32, Why::Growing),
            (32, 32, Why::Ceiling)
        ],
        "{changes:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_link_settles_the_limit_near_what_fills_it() {
    // 40 MiB/s of 2 MiB/s streams: 20 fill it (a little more keeps it full).
    let mut ctl = Controller::new(32, Instant::now());
    let (changes, moved) = simulate(&mut ctl, 10 << 20, 120.0, |_| pipe(40.0));
    let first_cut = changes
        .iter()
        .position(|(_, c)| c.why == Why::Slowed)
        .expect("a cut");
    assert!(
        changes[..first_cut].iter().all(|(_, c)| c.why == Why::Growing) && changes[first_cut].1.from == 32,
        "grown to 32, which overfills it: {changes:?}"
    );
    assert!(
        limits_after(&changes, 30.0).iter().all(|l| (19..=32).contains(l)),
        "settled between 19 and 32: {changes:?}"
    );
    let share = moved / (120.0 * 40.0 * MIB);
    assert!(share > 0.9, "the link was {:.0} % used", share * 100.0);
}

#[tokio::test(start_paused = true)]
async fn a_link_that_halves_is_followed_within_seconds() {
    let mut ctl = Controller::new(32, Instant::now());
    let (changes, _) = simulate(&mut ctl, 10 << 20, 90.0, |t| {
        pipe(if t < 45.0 { 40.0 } else { 20.0 })
    });
    let before = changes
        .iter()
        .rfind(|(t, _)| *t < 45.0)
        .map(|(_, c)| c.to)
        .unwrap();
    assert!(before >= 19, "{changes:?}");
    let first_cut = changes
        .iter()
        .find(|(t, c)| *t >= 45.0 && c.why == Why::Slowed)
        .expect("a cut after the link halved");
    assert!(
        first_cut.0 < 45.0 + 15.0,
        "cut {:.1} s after the link halved",
        first_cut.0 - 45.0
    );
    assert!(
        limits_after(&changes, 70.0).iter().all(|l| (9..=18).contains(l)),
        "10 streams fill it now: {changes:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn decisions_from_a_table_of_request_times() {
    // (request took s, bytes) for each of a window's requests → the decision.
    let big = 10u64 << 20;
    type Case<'a> = (&'a str, &'a [f64], Option<(usize, Why)>);
    let cases: &[Case] = &[
        ("all at their best pace", &[5.0; 8], Some((32, Why::Growing))),
        ("all at three quarters", &[6.7; 8], None),
        // 16 × pace ÷ 0.8, the best forgotten by 0.2 % a second (5.05 s
        // after 5 s, so half pace is 0.505).
        ("all at half pace", &[10.0; 8], Some((11, Why::Slowed))),
        ("a quarter pace", &[20.0; 8], Some((6, Why::Slowed))),
        ("too few to judge", &[10.0; 6], None),
    ];
    for (name, times, want) in cases {
        let t0 = Instant::now();
        let mut ctl = Controller::starting_at(32, 16, t0);
        // The best: one request of 10 MiB in 5 s, 16 in flight (the
        // window: it and the latest requests, 8 in all).
        assert_eq!(
            {
                let r = req(&mut ctl, t0, big, 99, 16);
                ctl.finished(r, &[], t0 + Duration::from_secs(5))
            },
            None
        );
        let mut got = None;
        for (i, took) in times.iter().enumerate() {
            let at = t0 + Duration::from_secs_f64(took + i as f64 * 1e-3);
            if let Some(c) = {
                let r = req(&mut ctl, t0, big, 0, 16);
                ctl.finished(r, &[], at)
            } {
                got = Some((c.to, c.why));
            }
        }
        assert_eq!(got, *want, "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn errors_cut_once_a_window_and_unused_room_is_not_grown() {
    let t0 = Instant::now();
    let mut ctl = Controller::starting_at(32, 16, t0);
    let c = ctl.failed(0, t0).expect("a cut");
    assert_eq!((c.from, c.to, c.why), (16, 11, Why::Errors));
    assert_eq!(ctl.failed(0, t0), None, "the same window's errors cut once");
    let e = ctl.epoch();
    assert_eq!(ctl.failed(e, t0).map(|c| c.to), Some(7));
    // Only 3 ever in flight: fast requests do not grow an unused limit.
    let mut ctl = Controller::starting_at(32, 16, t0);
    for i in 0..16 {
        let at = t0 + Duration::from_millis(600 + i);
        assert_eq!(
            {
                let r = req(&mut ctl, t0, 1000, 0, 3);
                ctl.finished(r, &[], at)
            },
            None
        );
    }
    assert_eq!(ctl.limit(), 16);
}

#[tokio::test(start_paused = true)]
async fn requests_overdue_in_flight_cut_before_they_end() {
    let t0 = Instant::now();
    let mut ctl = Controller::starting_at(32, 16, t0);
    let big = 10u64 << 20;
    assert_eq!(
        {
            let r = req(&mut ctl, t0, big, 99, 16);
            ctl.finished(r, &[], t0 + Duration::from_secs(5))
        },
        None
    );
    let flying: Vec<Flying> = (0..16).map(|_| req(&mut ctl, t0, big, 0, 16)).collect();
    assert_eq!(ctl.tick(&flying, t0 + Duration::from_secs(6)), None, "on time");
    // 12 s into a 5 s request: its pace is at best 0.42; sixteen of them
    // carry at most 6.7 streams' worth, so 16 → 9.
    let c = ctl.tick(&flying, t0 + Duration::from_secs(12)).expect("a cut");
    assert_eq!((c.to, c.why), (9, Why::Slowed));
}

#[tokio::test(start_paused = true)]
async fn the_budget_waits_for_room_and_counts_a_fixed_limit_only() {
    let b = Arc::new(Budget::new(None, 32));
    let mut held = Vec::new();
    for _ in 0..START {
        held.push(b.slot(1 << 20).await);
    }
    assert_eq!(b.view().in_flight, START);
    let b2 = b.clone();
    let waiting = tokio::spawn(async move { b2.slot(1 << 20).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "one more waits");
    held.pop()
        .unwrap()
        .failed_with(&ApiError::Protocol("not overload".into()));
    let s = waiting.await.unwrap();
    assert_eq!(b.limit(), START, "a refusal is not congestion");
    s.failed_with(&ApiError::Network("reset".into()));
    assert_eq!(b.view().reason, "errors");
    assert_eq!(b.limit(), (START as f64 * 0.7) as usize);

    let fixed = Arc::new(Budget::new(Some(4), 32));
    let many: Vec<Slot> = futures_util::future::join_all((0..10).map(|_| fixed.slot(1))).await;
    assert_eq!(
        fixed.view().in_flight,
        10,
        "a fixed limit is per file, not waited on here"
    );
    drop(many);
    assert_eq!(fixed.view().in_flight, 0);
    assert_eq!(fixed.view().reason, "fixed");
}
