//! Issue 14: the web UI in a real browser, over the real pipeline's data.
//!
//! `fleetprof-demo --keep` runs fleetprof's main job (real eBPF profiler, collector and ClickHouse;
//! a demo service whose v2 commit regresses `checkout::price_items`; detection; the agent's
//! validated fix in its outbox) and leaves the collector serving the web UI. Headless Chromium,
//! driven through chromedriver (WebDriver), then checks what a person would look at: the services
//! page lists the workload, its flame graph names the hot function, clicking a frame zooms (and the
//! URL reopens the zoom), the compare view shows the regressed function grown, the function page
//! marks the change point and deploys, the regression page names the root-cause commit and links
//! the fix. A second UI (`fleetprof-collector ui`) over an empty database with a token checks the
//! sign-in and the "how to get data in" page. A screenshot of every view is saved under
//! `target/ui-screenshots/` (a test artifact, not committed).
//!
//! Needs root, ClickHouse, cargo, `chromium` and `chromium-driver` (`cargo xtask setup`); about
//! 3 minutes on 2 cores, most of it the demo.
//!
//! Run: `cargo build --workspace --bins --exclude profiler-ebpf && cargo test -p fleetprof-tests --test ui -- --nocapture`

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use fleetprof_tests::fleet::ChildGuard;
use fleetprof_tests::{free_port, require_root, workspace_bin, workspace_root};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Longest a page element may take to appear (pages answer in well under a second; the machine
/// may be busy with other tests).
const WAIT: Duration = Duration::from_secs(30);

/// Processes `fleetprof-demo --keep` left running, stopped (SIGTERM) when the test ends.
struct Kept(Vec<u32>);

impl Drop for Kept {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: kill(2) on processes the demo this test ran started and detached.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
}

/// What the demo printed that the test needs.
struct Demo {
    ui: String,
    clickhouse_url: String,
    regression_id: String,
    commit_prefix: String,
    kept: Kept,
}

/// The word after `key` on the first line of `out` containing it, without trailing punctuation.
fn after<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    let line = out.lines().find(|l| l.contains(key))?;
    let rest = &line[line.find(key)? + key.len()..];
    rest.split_whitespace()
        .next()
        .map(|w| w.trim_end_matches([',', ')', '(']))
}

fn run_demo(dir: &Path) -> Demo {
    let out = Command::new(workspace_bin("fleetprof-demo"))
        .arg("--keep")
        .arg("--dir")
        .arg(dir)
        .args(["--seconds", "40"])
        .output()
        .expect("running fleetprof-demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let pid = |key: &str| after(&stdout, key).and_then(|p| p.parse::<u32>().ok());
    let kept = Kept(
        [pid("collector pid "), pid("ClickHouse pid ")]
            .into_iter()
            .flatten()
            .collect(),
    );
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{stderr}");
    println!("{stdout}");
    let ui = after(&stdout, "web UI: ")
        .unwrap_or_else(|| panic!("the demo printed no web UI address:\n{stdout}"))
        .trim_end_matches('/')
        .to_owned();
    assert_eq!(kept.0.len(), 2, "the demo printed no pids:\n{stdout}");
    let summary = stdout
        .split("fleetprof demo: summary")
        .nth(1)
        .expect("summary");
    Demo {
        ui,
        clickhouse_url: after(&stdout, "ClickHouse ")
            .expect("ClickHouse URL")
            .to_owned(),
        regression_id: after(summary, "regression  ")
            .expect("regression id")
            .to_owned(),
        commit_prefix: after(summary, "root cause  ")
            .expect("root cause")
            .to_owned(),
        kept,
    }
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// chromedriver on a free port, and a WebDriver session of headless Chromium with a fresh profile.
async fn browser(dir: &Path) -> (ChildGuard, Client) {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: `cargo xtask setup` installs chromium and chromium-driver"
        );
    }
    let port = free_port();
    let mut cmd = Command::new(CHROMEDRIVER);
    cmd.arg(format!("--port={port}"));
    let driver = ChildGuard::spawn("chromedriver", cmd, &dir.join("chromedriver.log"))
        .expect("chromedriver");
    wait_for_port(port, "chromedriver");
    let profile = dir.join("chromium-profile");
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1600,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let caps = caps.as_object().cloned().expect("an object");
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "starting Chromium through chromedriver: {e}\n{}",
                driver.log()
            )
        });
    (driver, client)
}

fn shots_dir() -> PathBuf {
    let d = workspace_root().join("target").join("ui-screenshots");
    std::fs::create_dir_all(&d).expect("creating target/ui-screenshots");
    d
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    let path = shots_dir().join(format!("{name}.png"));
    std::fs::write(&path, &png).expect("writing the screenshot");
    println!("screenshot {} ({} bytes)", path.display(), png.len());
}

/// Opens `url` and waits for `css`; prints how long the page took.
async fn open(c: &Client, url: &str, css: &str) -> fantoccini::elements::Element {
    let started = Instant::now();
    c.goto(url)
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    let el = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{url}: no {css} ({e})"));
    println!("{url}: {css} after {:.0?}", started.elapsed());
    el
}

async fn attr(el: &fantoccini::elements::Element, name: &str) -> String {
    el.attr(name).await.expect("attr").unwrap_or_default()
}

/// A GET with optional bearer token; returns the status code and body.
fn http_get(base: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connecting to the UI");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("sending");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("reading");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// The UI over the demo's data, looked at in Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_shows_profiles_regression_root_cause_and_fix_in_a_browser() {
    require_root();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let demo = tokio::task::spawn_blocking({
        let d = dir.path().join("demo");
        move || run_demo(&d)
    })
    .await
    .expect("the demo thread");
    println!("demo done in {:.0?}; UI at {}", started.elapsed(), demo.ui);
    let ui = demo.ui.clone();
    let hot = "checkout::price_items";

    // The JSON API answers scripts with the same data.
    let (status, body) = http_get(&ui, "/api/regressions?service=checkout", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&demo.regression_id), "{body}");

    let (_driver, c) = browser(dir.path()).await;

    // Services: the workload is listed, with a link to its flame graph.
    let link = open(
        &c,
        &format!("{ui}/"),
        "tr[data-service='checkout'] a.service",
    )
    .await;
    assert_eq!(link.text().await.unwrap(), "checkout");
    shot(&c, "1-services").await;

    // Flame graph: the hot function is drawn, by name, and heads the top-functions table.
    link.click().await.unwrap();
    let sel = format!("#flame g.frame[data-name='{hot}']");
    let frame = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(&sel))
        .await
        .unwrap_or_else(|e| panic!("the flame graph does not show {hot}: {e}"));
    let title = frame.find(Locator::Css("title")).await.unwrap();
    let title = title.html(true).await.unwrap();
    assert!(title.starts_with(hot), "frame title {title:?}");
    c.find(Locator::Css(&format!(
        "#top-total tr[data-function='{hot}']"
    )))
    .await
    .unwrap_or_else(|e| panic!("{hot} is not in the top functions by total: {e}"));
    let before_zoom = attr(&frame.find(Locator::Css("rect")).await.unwrap(), "width").await;
    shot(&c, "2-flame").await;

    // Clicking the frame zooms into it: it spans the whole width, and the URL says so.
    frame.click().await.unwrap();
    let focused = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#flame[data-zoomed='true'] g.frame.focus"))
        .await
        .expect("clicking a frame zooms");
    assert_eq!(attr(&focused, "data-name").await, hot);
    let width: f64 = attr(&focused.find(Locator::Css("rect")).await.unwrap(), "width")
        .await
        .parse()
        .unwrap();
    let before: f64 = before_zoom.parse().unwrap();
    assert!(
        (width - 1200.0).abs() < 0.5 && before < 1199.0,
        "zoomed width {width} (before {before})"
    );
    let zoomed_url = c.current_url().await.unwrap().to_string();
    assert!(zoomed_url.contains("focus="), "{zoomed_url}");
    shot(&c, "3-flame-zoomed").await;
    // Deep link: the URL alone reopens the zoom, and search highlights and sums matches.
    let search_url = format!("{zoomed_url}&search=price_items&mode=icicle");
    let again = open(&c, &search_url, "#flame[data-zoomed='true'] g.frame.focus").await;
    assert_eq!(attr(&again, "data-name").await, hot);
    let matched = c
        .find(Locator::Id("match"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(matched.starts_with("matched "), "{matched:?}");
    assert!(
        c.find(Locator::Id("icicle"))
            .await
            .unwrap()
            .prop("checked")
            .await
            .unwrap()
            == Some("true".into())
    );
    shot(&c, "4-flame-search-icicle").await;

    // Compare: the default is the latest version switch, v1 → v2; the regressed function grew.
    let row = open(
        &c,
        &format!("{ui}/compare?service=checkout"),
        &format!("#diff tr[data-function='{hot}']"),
    )
    .await;
    let grew: f64 = attr(&row, "data-delta-total").await.parse().unwrap();
    assert!(grew > 1.0, "{hot} grew by {grew} percentage points only");
    let baseline = c
        .find(Locator::Css("input[name='baseline']"))
        .await
        .unwrap();
    assert_eq!(baseline.prop("value").await.unwrap().as_deref(), Some("v1"));
    c.find(Locator::Css(&format!("#flame g.frame[data-name='{hot}']")))
        .await
        .expect("the differential flame graph draws the function");
    shot(&c, "5-compare").await;

    // Function: cost over time with the detected change point and the deploys.
    open(
        &c,
        &format!(
            "{ui}/function?service=checkout&function={}",
            hot.replace(':', "%3A")
        ),
        "#history polyline.total",
    )
    .await;
    let change_points = c
        .find_all(Locator::Css("#history .change-point"))
        .await
        .unwrap();
    let deploys = c.find_all(Locator::Css("#history .deploy")).await.unwrap();
    assert!(!change_points.is_empty(), "no change point marked");
    assert!(deploys.len() >= 2, "{} deploys marked", deploys.len());
    c.find(Locator::Css("#callers tbody tr"))
        .await
        .expect("callers");
    shot(&c, "6-function").await;

    // Regressions list, then the regression: root-cause commit first, and the fix linked.
    let listed = open(
        &c,
        &format!("{ui}/regressions"),
        &format!("tr[data-id='{}'] a", demo.regression_id),
    )
    .await;
    shot(&c, "7-regressions").await;
    listed.click().await.unwrap();
    let first = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#candidates tr.candidate"))
        .await
        .expect("ranked candidates");
    let commit = attr(&first, "data-commit").await;
    assert!(
        commit.starts_with(&demo.commit_prefix),
        "first candidate {commit}, the demo's root cause {}",
        demo.commit_prefix
    );
    let author = first
        .find(Locator::Css(".author"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(author.contains("Dana Developer"), "{author}");
    let fix = c
        .find(Locator::Id("fix-link"))
        .await
        .expect("a link to the fix");
    let href = attr(&fix, "href").await;
    assert!(href.contains("/fixes/"), "{href}");
    assert!(fix.text().await.unwrap().contains("fleetprof/fix-"));
    let reprofile = c
        .find(Locator::Css("table.checks tr[data-step='reprofile']"))
        .await
        .expect("the validation's re-profiling figures")
        .text()
        .await
        .unwrap();
    assert!(
        reprofile.contains("passed") && reprofile.contains('%'),
        "{reprofile}"
    );
    shot(&c, "8-regression").await;
    fix.click().await.unwrap();
    let pr = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("pr"))
        .await
        .expect("the fix's PR text");
    assert!(pr.text().await.unwrap().contains("cc Dana Developer"));
    shot(&c, "9-fix").await;

    // Opportunities: hot functions matched against the repository's skills.
    open(
        &c,
        &format!("{ui}/opportunities"),
        "#opportunities tbody tr",
    )
    .await;
    shot(&c, "10-opportunities").await;

    // An empty database behind a token: sign in, then the page says how to get data in.
    let token = "ui-test-token";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let port = free_port();
    let mut cmd = Command::new(workspace_bin("fleetprof-collector"));
    cmd.args(["ui", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--clickhouse-url",
            &demo.clickhouse_url,
            "--database",
            "ui_empty",
        ])
        .arg("--token-file")
        .arg(&token_file);
    let empty_ui = ChildGuard::spawn("empty UI", cmd, &dir.path().join("ui.log")).unwrap();
    wait_for_port(port, "fleetprof-collector ui");
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(http_get(&base, "/api/services", None).0, 401);
    let (status, body) = http_get(&base, "/api/services", Some(token));
    assert_eq!(status, 200, "{body}\n{}", empty_ui.log());
    assert!(body.contains("\"empty_database\":true"), "{body}");
    let field = open(&c, &format!("{base}/"), "#login #token").await;
    shot(&c, "11-sign-in").await;
    field.send_keys(token).await.unwrap();
    c.find(Locator::Css("#login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let empty = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("empty"))
        .await
        .expect("the empty-database page after signing in");
    assert!(
        empty
            .text()
            .await
            .unwrap()
            .contains("fleetprof-profiler run")
    );
    shot(&c, "12-empty").await;

    c.close().await.unwrap();
    drop(demo.kept);
    println!("test took {:.0?}", started.elapsed());
}
