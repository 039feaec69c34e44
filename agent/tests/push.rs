//! `fleetprof-agent fix --push` end to end: a real C repository whose `origin` is a local bare git
//! remote, and a local HTTP server speaking the two GitHub endpoints the agent uses (create a pull
//! request, request reviewers). Checks what reaches the remote and the API, and that API errors are
//! reported clearly and leave the fix on its local branch.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use serde_json::{Value, json};

mod common;

use common::{c_logging_v1, git};

/// The C service of the eval corpus's `c-logging` case, before its root-cause commit, with its hot
/// function named `write_items`: a regressions file carries no stacks, so the function's own name
/// is what matches the logging skill's profile signs (`write`).
fn v1() -> String {
    c_logging_v1().replace("price_items", "write_items")
}

const TOKEN: &str = "test-token-5f3a";
const BRANCH: &str = "fleetprof/fix-r-c";

/// A C service whose second commit, by `author`, logs a line per item in `write_items`'s loop;
/// `origin` is a bare repository holding `main`. Returns the root-cause commit.
fn c_repo(root: &Path, remote: &Path, author: (&str, &str)) -> String {
    let commit = common::c_repo(root, &v1(), Some(author));
    let parent = remote.parent().unwrap();
    let remote_name = remote.file_name().unwrap().to_str().unwrap();
    git(
        parent,
        &["init", "--quiet", "--bare", "-b", "main", remote_name],
    );
    git(root, &["remote", "add", "origin", remote.to_str().unwrap()]);
    git(root, &["push", "--quiet", "origin", "main"]);
    commit
}

/// One request the fake GitHub received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: String,
    body: Value,
}

/// How the fake GitHub answers `POST …/pulls`.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Ok,
    Unprocessable,
    BadCredentials,
}

#[derive(Clone)]
struct Fake {
    mode: Mode,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    fn record(&self, uri: &Uri, headers: &HeaderMap, body: Value) {
        self.seen.lock().unwrap().push(Seen {
            path: uri.path().to_string(),
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            body,
        });
    }
}

async fn pulls(
    State(f): State<Fake>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    f.record(&uri, &headers, body);
    match f.mode {
        Mode::Ok => (
            StatusCode::CREATED,
            Json(json!({"number": 7, "html_url": "https://github.example/acme/svc/pull/7"})),
        ),
        Mode::Unprocessable => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"message": "Validation Failed", "errors": [
                {"resource": "PullRequest", "code": "custom",
                 "message": "A pull request already exists for acme:fleetprof/fix-r-c."}]})),
        ),
        Mode::BadCredentials => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Bad credentials"})),
        ),
    }
}

async fn reviewers(
    State(f): State<Fake>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    f.record(&uri, &headers, body);
    (StatusCode::CREATED, Json(json!({"number": 7})))
}

/// Starts the fake GitHub on a free loopback port; returns its base URL and what it saw.
async fn fake_github(mode: Mode) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/repos/{owner}/{repo}/pulls", post(pulls))
        .route(
            "/repos/{owner}/{repo}/pulls/{n}/requested_reviewers",
            post(reviewers),
        )
        .with_state(Fake {
            mode,
            seen: seen.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

struct Run {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    remote: PathBuf,
    outbox: PathBuf,
    commit: String,
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
    seen: Vec<Seen>,
}

/// Runs `fleetprof-agent fix --push` on a fresh repository against a fresh fake GitHub.
async fn run(mode: Mode, author: (&str, &str), extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let remote = dir.path().join("remote.git");
    let commit = c_repo(&repo, &remote, author);
    let regressions = common::regressions_file(
        dir.path(),
        "write_items",
        &commit,
        &format!("{} <{}>", author.0, author.1),
        None,
    );
    let outbox = dir.path().join("outbox");
    let (api, seen) = fake_github(mode).await;
    let skills = Path::new(env!("CARGO_MANIFEST_DIR")).join("../skills");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetprof-agent"))
        .args(["fix", "--regression", "r-c", "--llm", "none", "--push"])
        .args(["--github-repo", "acme/svc", "--github-api-url", &api])
        .args(extra)
        .arg("--repo")
        .arg(&repo)
        .arg("--regressions-file")
        .arg(&regressions)
        .arg("--outbox")
        .arg(&outbox)
        .arg("--skills")
        .arg(&skills)
        .env("GITHUB_TOKEN", TOKEN)
        .env_remove("GITHUB_REPOSITORY")
        .env_remove("GITHUB_API_URL")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    Run {
        _dir: dir,
        repo,
        remote,
        outbox: outbox.join(BRANCH.replace('/', "-")),
        commit,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        seen,
    }
}

/// The fix commit is pushed to the bare remote, the PR is opened with the right fields and the
/// bearer token, and the root-cause author (from a GitHub no-reply email) is requested as reviewer
/// and named in PR.md.
#[tokio::test(flavor = "multi_thread")]
async fn push_opens_the_pr_and_requests_the_root_cause_author() {
    let r = run(
        Mode::Ok,
        ("Dana Dev", "4242+dana-dev@users.noreply.github.com"),
        &[],
    )
    .await;
    assert!(r.status.success(), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("pull request: https://github.example/acme/svc/pull/7"),
        "{}",
        r.stdout
    );
    // The remote holds the branch, at the local fix commit, one commit on top of the root cause.
    let local = git(&r.repo, &["rev-parse", BRANCH]);
    let remote = git(&r.remote, &["rev-parse", BRANCH]);
    assert_eq!(local, remote);
    assert_eq!(
        git(&r.remote, &["rev-parse", &format!("{BRANCH}~1")]).trim(),
        r.commit
    );
    let files = git(
        &r.remote,
        &["diff", "--name-only", &format!("{BRANCH}~1"), BRANCH],
    );
    assert_eq!(files.trim(), "svc.c");
    // main on the remote is untouched.
    assert_eq!(
        git(&r.remote, &["rev-parse", "main"]).trim(),
        r.commit.as_str()
    );

    assert_eq!(r.seen.len(), 2, "{:?}", r.seen);
    let pr = &r.seen[0];
    assert_eq!(pr.path, "/repos/acme/svc/pulls");
    assert_eq!(pr.authorization, format!("Bearer {TOKEN}"));
    assert_eq!(pr.body["head"], BRANCH);
    assert_eq!(pr.body["base"], "main");
    assert_eq!(pr.body["draft"], false);
    let title = pr.body["title"].as_str().unwrap();
    assert!(
        title.starts_with("perf: fix-forward write_items regression in svc-c"),
        "{title}"
    );
    let body = pr.body["body"].as_str().unwrap();
    let pr_md = std::fs::read_to_string(r.outbox.join("PR.md")).unwrap();
    assert_eq!(body, pr_md);
    assert!(body.contains("cc @dana-dev"), "{body}");
    assert!(body.contains("Reviewer: @dana-dev"), "{body}");

    let rev = &r.seen[1];
    assert_eq!(rev.path, "/repos/acme/svc/pulls/7/requested_reviewers");
    assert_eq!(rev.authorization, format!("Bearer {TOKEN}"));
    assert_eq!(rev.body, json!({"reviewers": ["dana-dev"]}));
    let proposal: Value =
        serde_json::from_str(&std::fs::read_to_string(r.outbox.join("proposal.json")).unwrap())
            .unwrap();
    assert_eq!(proposal["reviewer"], "dana-dev");
    assert_eq!(proposal["pr_url"], "https://github.example/acme/svc/pull/7");
}

/// An author whose email is not a no-reply address is requested only through `--reviewer-map`;
/// without a mapping, PR.md says the login is unknown and no reviewer is requested.
#[tokio::test(flavor = "multi_thread")]
async fn reviewer_login_comes_from_the_map_or_nowhere() {
    let mapped = run(
        Mode::Ok,
        ("Dev One", "dev@example.com"),
        &["--reviewer-map", "DEV@example.com=dev-one"],
    )
    .await;
    assert!(mapped.status.success(), "{}", mapped.stderr);
    assert_eq!(mapped.seen.len(), 2, "{:?}", mapped.seen);
    assert_eq!(mapped.seen[1].body, json!({"reviewers": ["dev-one"]}));

    let unknown = run(Mode::Ok, ("Dev One", "dev@example.com"), &[]).await;
    assert!(unknown.status.success(), "{}", unknown.stderr);
    assert_eq!(
        unknown.seen.len(),
        1,
        "no reviewer request: {:?}",
        unknown.seen
    );
    let body = unknown.seen[0].body["body"].as_str().unwrap();
    assert!(body.contains("cc Dev One <dev@example.com>"), "{body}");
    assert!(body.contains("Reviewer: unknown"), "{body}");
    assert!(
        unknown.stderr.contains("no reviewer requested"),
        "{}",
        unknown.stderr
    );
}

/// 422 and 401 from the API fail the command with GitHub's own message, and the fix stays on its
/// local branch and in the outbox.
#[tokio::test(flavor = "multi_thread")]
async fn api_errors_are_clear_and_keep_the_local_branch() {
    for (mode, needles) in [
        (
            Mode::Unprocessable,
            &["HTTP 422", "A pull request already exists"][..],
        ),
        (
            Mode::BadCredentials,
            &["HTTP 401", "Bad credentials", "GITHUB_TOKEN"][..],
        ),
    ] {
        let r = run(
            mode,
            ("Dana Dev", "4242+dana-dev@users.noreply.github.com"),
            &[],
        )
        .await;
        assert!(!r.status.success(), "{mode:?}: {}", r.stdout);
        for n in needles {
            assert!(r.stderr.contains(n), "{mode:?}: {n:?} not in {}", r.stderr);
        }
        assert!(
            r.stderr.contains(&format!("kept on local branch {BRANCH}")),
            "{}",
            r.stderr
        );
        assert_eq!(r.seen.len(), 1, "no reviewer request after a failed PR");
        let local = git(&r.repo, &["rev-parse", BRANCH]);
        assert_eq!(
            git(&r.repo, &["rev-parse", &format!("{BRANCH}~1")]).trim(),
            r.commit
        );
        assert!(!local.trim().is_empty());
        assert!(r.outbox.join("PR.md").is_file());
    }
}
