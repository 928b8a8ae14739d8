//! The dashboard in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`), driven over WebDriver: log in with the link
//! `dashboard` prints, see a dropped file arrive without reloading, pause,
//! retry a failed file, resume. Screenshots go to `target/screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::harness::*;

/// chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Option<Driver> {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    Command::new("chromedriver").arg("--version").output().ok()?;
    let _ = chromium;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new("chromedriver")
        .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let url = format!("http://127.0.0.1:{port}");
    let driver = Driver { child, url };
    let ready = wait_until(Duration::from_secs(20), || {
        reqwest::blocking::get(format!("{}/status", driver.url))
            .ok()
            .and_then(|r| r.json::<Value>().ok())
            .is_some_and(|v| v["value"]["ready"] == true)
    });
    assert!(ready, "chromedriver did not become ready");
    Some(driver)
}

fn chromium_binary() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("/usr/bin/chromium")
}

async fn browser(driver: &Driver, profile: &std::path::Path, extra: &[&str]) -> Client {
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": chromium_binary(), "args": args }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits (at most `secs`) until `cond` holds on the page.
async fn until(c: &Client, secs: u64, what: &str, cond: impl AsyncFn(&Client) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if cond(c).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shot = c.screenshot().await.unwrap_or_default();
    let path = screenshots().join("failure.png");
    let _ = std::fs::write(&path, shot);
    panic!(
        "the dashboard did not show {what} (screenshot: {})",
        path.display()
    );
}

/// Clicks the element `css` selects, as a user does. The page redraws its
/// lists as events arrive, so an element found a moment ago may be gone:
/// it is found again (a user would just click the new one).
async fn click(c: &Client, css: &str) {
    for _ in 0..50 {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && e.click().await.is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not click {css}");
}

/// The failed file is listed with the service's refusal (413).
async fn shows_the_refusal(c: &Client) -> bool {
    text_of(c, "#failures li[data-path$='too-big.mov']")
        .await
        .contains("413")
}

#[test]
fn the_dashboard_in_chromium_shows_uploads_live_pauses_and_retries() {
    let Some(driver) = start_driver() else {
        skip_or_fail(
            "chromium and chromedriver (Debian packages chromium, chromium-driver) are not installed",
        );
        return;
    };
    let emu = Emulator::start(&["--max-size", "5000"]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n[control]\nlisten = \"127.0.0.1:0\"\n",
        "",
    );
    let mut agent = sb.running_agent(&[]);
    let link = {
        let mut c = sb.cmd();
        c.args(["dashboard", "--no-open"]);
        let out = run(c);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout.lines().next().unwrap().to_string()
    };
    let profile = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = browser(&driver, profile.path(), &[]).await;
        c.goto(&link).await.unwrap();
        until(&c, 20, "the agent running", async |c: &Client| {
            text_of(c, "#state").await == "running"
        })
        .await;
        assert!(
            !c.current_url().await.unwrap().as_str().contains("token"),
            "the code leaves the address bar"
        );
        // A marker that a reload would wipe.
        c.execute("window.__notReloaded = true", vec![]).await.unwrap();

        write_file(&sb.drop_dir().join("arrives.mov"), 1000, 1);
        write_file(&sb.drop_dir().join("too-big.mov"), 10_000, 2);
        until(&c, 30, "the upload with its file_no", async |c: &Client| {
            text_of(c, "#recent li[data-path$='arrives.mov'] .file-no")
                .await
                .starts_with("10")
        })
        .await;
        until(&c, 30, "the failure", shows_the_refusal).await;
        // The transfer's budget: requests in flight of the adaptive limit.
        until(&c, 20, "the adaptive limit", async |c: &Client| {
            let t = text_of(c, "#concurrency").await;
            t.contains("in flight") && t.contains("adaptive, max 32")
        })
        .await;
        let still = c
            .execute("return window.__notReloaded === true", vec![])
            .await
            .unwrap();
        assert_eq!(still, json!(true), "the page updated itself, without a reload");
        std::fs::write(screenshots().join("dashboard.png"), c.screenshot().await.unwrap()).unwrap();

        // Pause: the state changes, and the agent says so.
        click(&c, "#pause").await;
        until(&c, 20, "paused", async |c: &Client| {
            text_of(c, "#state").await.starts_with("paused")
        })
        .await;
        assert_eq!(text_of(&c, "#pause").await, "Resume");
        assert_eq!(sb.status()["agent"]["pause_reason"], "paused_by_user");
        std::fs::write(
            screenshots().join("dashboard-paused.png"),
            c.screenshot().await.unwrap(),
        )
        .unwrap();

        // Retry puts the failed file back in the queue.
        click(&c, "#failures li[data-path$='too-big.mov'] button.retry").await;
        assert!(
            wait_until(Duration::from_secs(20), || sb.status()["roots"][0]["failed"] == 0),
            "{}",
            sb.status()
        );
        until(&c, 20, "no failures", async |c: &Client| {
            text_of(c, "#failures").await.contains("no failures")
        })
        .await;
        // Resume: it is tried again (and refused again: 413).
        click(&c, "#pause").await;
        until(&c, 20, "running again", async |c: &Client| {
            text_of(c, "#state").await == "running"
        })
        .await;
        until(&c, 30, "the failure again", shows_the_refusal).await;
        c.close().await.unwrap();

        // A narrow window, in the dark colour scheme: still readable.
        let profile2 = tempfile::tempdir().unwrap();
        let c = browser(
            &driver,
            profile2.path(),
            &[
                "--window-size=420,900",
                "--force-dark-mode",
                "--blink-settings=preferredColorScheme=0",
            ],
        )
        .await;
        let link = {
            let mut cmd = sb.cmd();
            cmd.args(["dashboard", "--no-open"]);
            run(cmd).stdout.lines().next().unwrap().to_string()
        };
        c.goto(&link).await.unwrap();
        until(&c, 20, "the page", async |c: &Client| {
            text_of(c, "#state").await == "running"
        })
        .await;
        let dark = c
            .execute(
                "return matchMedia('(prefers-color-scheme: dark)').matches",
                vec![],
            )
            .await
            .unwrap();
        let overflow = c
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(overflow, json!(true), "no sideways scrolling on a narrow window");
        std::fs::write(
            screenshots().join("dashboard-narrow.png"),
            c.screenshot().await.unwrap(),
        )
        .unwrap();
        let _ = dark;
        c.close().await.unwrap();
    });
    assert_eq!(agent.stop().code, 1, "a file failed in this run");
}

/// An attribute of the element `css` selects (empty when none). Read in
/// one script on the page, so a redraw between finding the element and
/// reading it cannot hand back a stale one.
async fn attr_of(c: &Client, css: &str, name: &str) -> String {
    c.execute(
        "const e = document.querySelector(arguments[0]); return e ? (e.getAttribute(arguments[1]) || '') : '';",
        vec![json!(css), json!(name)],
    )
    .await
    .ok()
    .and_then(|v| v.as_str().map(str::to_string))
    .unwrap_or_default()
}

/// How many elements `css` selects, counted in one script on the page.
async fn count_of(c: &Client, css: &str) -> usize {
    c.execute(
        "return document.querySelectorAll(arguments[0]).length;",
        vec![json!(css)],
    )
    .await
    .ok()
    .and_then(|v| v.as_u64())
    .unwrap_or(0) as usize
}

#[test]
fn the_dashboard_draws_throughput_with_its_limit_and_outage_the_schedule_week_and_frame_strips() {
    let Some(driver) = start_driver() else {
        skip_or_fail(
            "chromium and chromedriver (Debian packages chromium, chromium-driver) are not installed",
        );
        return;
    };
    let mut emu = Some(Emulator::start(&[]));
    let sb = Sandbox::watching(
        emu.as_ref().unwrap(),
        "settle = \"200ms\"\nbandwidth_limit = \"2MiB/s\"\n[control]\nlisten = \"127.0.0.1:0\"\n\
         [[agent.schedule]]\nfrom = \"22:00\"\nto = \"06:00\"\nbandwidth_limit = \"4MiB/s\"\n",
        "sets = \"folder\"\nset_trigger = \"_DONE\"\nsequence_gaps = \"warn\"\n",
    );
    let mut agent = sb.running_agent(&[]);
    // A render of ten frames with frame 5 missing, then a big file that
    // goes at the limit for a few seconds.
    let shot = sb.drop_dir().join("sh010");
    std::fs::create_dir(&shot).unwrap();
    for i in (1..=10u64).filter(|i| *i != 5) {
        write_file(&shot.join(format!("sh010.{i:04}.exr")), 2000, i);
    }
    std::fs::write(shot.join("_DONE"), "").unwrap();
    // A second render whose farm never writes _DONE: it waits for the
    // Release button.
    let held = sb.drop_dir().join("sh020");
    std::fs::create_dir(&held).unwrap();
    for i in 1..=3u64 {
        write_file(&held.join(format!("sh020.{i:04}.exr")), 2000, 50 + i);
    }
    write_file(&sb.drop_dir().join("plate.mov"), 8 * 1024 * 1024, 99);
    assert!(
        wait_until(Duration::from_secs(60), || emu.as_ref().unwrap().ledger().len()
            == 11),
        "{}",
        agent.log_text()
    );
    let link = {
        let mut c = sb.cmd();
        c.args(["dashboard", "--no-open"]);
        run(c).stdout.lines().next().unwrap().to_string()
    };
    let profile = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Tall enough that the screenshot shows the week too.
        let c = browser(&driver, profile.path(), &["--window-size=1280,1500"]).await;
        c.goto(&link).await.unwrap();
        until(&c, 20, "the throughput chart", async |c: &Client| {
            c.execute("refresh()", vec![]).await.ok();
            attr_of(c, "#throughput-chart", "data-rates")
                .await
                .split(',')
                .any(|r| r.parse::<u64>().is_ok_and(|r| r > 0))
        })
        .await;
        // What was drawn: the bytes went at about the limit in force, and
        // the limit line is drawn at it.
        let rates: Vec<u64> = attr_of(&c, "#throughput-chart", "data-rates")
            .await
            .split(',')
            .filter_map(|r| r.parse().ok())
            .collect();
        let limits: Vec<u64> = attr_of(&c, "#throughput-chart", "data-limits")
            .await
            .split(',')
            .filter_map(|r| r.parse().ok())
            .collect();
        let top = *limits.iter().max().expect("a limit drawn");
        assert!(top == 2 << 20 || top == 4 << 20, "{limits:?}");
        assert!(
            rates.iter().all(|r| *r <= top + top / 2),
            "{rates:?} over the limit {top}"
        );
        assert_eq!(count_of(&c, "#throughput-chart path.limit").await, 1);
        let header = text_of(&c, "#limit").await;
        assert!(
            header.starts_with("limit ") && header.ends_with("MiB/s"),
            "{header}"
        );

        // The week: 22:00 to 06:00 at 4 MiB/s, the rest at 2 MiB/s, each day.
        for day in 0..7 {
            assert_eq!(
                attr_of(
                    &c,
                    &format!("#week-chart rect.run[data-day='{day}'][data-from='22:00']"),
                    "data-limit"
                )
                .await,
                (4u64 << 20).to_string()
            );
            assert_eq!(
                attr_of(
                    &c,
                    &format!("#week-chart rect.run[data-day='{day}'][data-from='06:00']"),
                    "data-limit"
                )
                .await,
                (2u64 << 20).to_string()
            );
        }
        assert_eq!(count_of(&c, "#week-chart rect.now").await, 1);

        // The set: one strip, frame 5 a gap drawn in red; one row in recent
        // uploads for its ten files.
        until(&c, 20, "the frame strip", async |c: &Client| {
            !attr_of(c, "#sets li[data-set='sh010'] svg.strip", "data-frames")
                .await
                .is_empty()
        })
        .await;
        assert_eq!(
            attr_of(&c, "#sets li[data-set='sh010'] svg.strip", "data-frames").await,
            "dddd-ddddd"
        );
        assert_eq!(
            count_of(&c, "#sets li[data-set='sh010'] svg.strip rect.gap").await,
            1
        );
        assert_eq!(count_of(&c, "#recent li[data-set='sh010']").await, 1);
        let row = text_of(&c, "#recent li[data-set='sh010'] .set-count").await;
        assert!(row.starts_with("10 files"), "{row}");
        assert_eq!(count_of(&c, "#recent li").await, 2, "the set and plate.mov");
        std::fs::write(
            screenshots().join("dashboard-charts.png"),
            c.screenshot().await.unwrap(),
        )
        .unwrap();

        // The waiting set: its frames drawn waiting, and Release lets it go.
        until(&c, 20, "the waiting set's strip", async |c: &Client| {
            attr_of(c, "#sets li[data-set='sh020'] svg.strip", "data-frames").await == "www"
        })
        .await;
        click(&c, "#sets li[data-set='sh020'] button.release").await;
        let state = || {
            sb.status()["sets"]
                .as_array()
                .and_then(|s| s.iter().find(|x| x["set"] == "sh020").cloned())
                .map(|x| x["state"].clone())
        };
        assert!(
            wait_until(Duration::from_secs(30), || state() == Some(json!("complete"))),
            "{:?}",
            state()
        );
        until(&c, 20, "the released set's frames done", async |c: &Client| {
            c.execute("refresh()", vec![]).await.ok();
            attr_of(c, "#sets li[data-set='sh020'] svg.strip", "data-frames").await == "ddd"
        })
        .await;

        // The service goes away: the next upload finds it out, and the
        // chart shades the outage.
        drop(emu.take());
        write_file(&sb.drop_dir().join("late.mov"), 1000, 7);
        until(&c, 60, "the outage shaded", async |c: &Client| {
            c.execute("refresh()", vec![]).await.ok();
            count_of(c, "#throughput-chart rect.band.outage").await > 0
        })
        .await;
        assert_eq!(text_of(&c, "#state").await, "service unreachable");
        std::fs::write(
            screenshots().join("dashboard-outage.png"),
            c.screenshot().await.unwrap(),
        )
        .unwrap();
        c.close().await.unwrap();
    });
    agent.stop();
}
