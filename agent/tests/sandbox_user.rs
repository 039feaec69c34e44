//! Repository commands run as an unprivileged user: a build step sees a non-zero uid and no root
//! group, can write its worktree and its own HOME, cannot write outside them (root's home, the main
//! repository), and still finds the toolchains. Needs root (it is what CI runs the suite as).

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fleetprof_agent::fix::validate::{Worktree, run_command, sandbox_ids};

mod common;

use common::git;

#[test]
fn commands_run_as_the_sandbox_user_and_write_only_their_worktree() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test checks the switch from root to the sandbox user: run it as root"
    );
    let (uid, gid) = sandbox_ids().expect("root has a sandbox user");
    assert_ne!(uid, 0);
    assert_ne!(gid, 0);

    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("main.c"), "int main(void) { return 0; }\n").unwrap();
    git(&repo, &["init", "--quiet", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(
        &repo,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "--quiet",
            "-m",
            "init",
        ],
    );
    let wt = Worktree::create(&repo, "fleetprof/sandbox-test", "main").unwrap();
    let w = wt.path();
    let t = Duration::from_secs(120);

    // Who the command is, and that it can build in its worktree and write its HOME.
    let c = run_command(
        "build",
        "echo uid=$(id -u) groups=$(id -G) && gcc -o app main.c && ./app && touch \"$HOME/cache\" && echo built",
        &w,
        t,
    );
    assert!(c.passed, "{}", c.detail);
    assert!(c.detail.contains(&format!("uid={uid} ")), "{}", c.detail);
    let groups = c
        .detail
        .lines()
        .find_map(|l| l.split_once("groups=").map(|(_, g)| g.to_string()))
        .unwrap();
    assert!(
        groups.split_whitespace().all(|g| g != "0"),
        "root's group is dropped: {groups}"
    );
    assert!(c.detail.ends_with("built"), "{}", c.detail);
    // Handed back to root afterwards, so git works on the worktree.
    assert_eq!(std::fs::metadata(w.join("app")).unwrap().uid(), 0);
    assert_eq!(std::fs::metadata(&w).unwrap().uid(), 0);
    let status = Command::new("git")
        .arg("-C")
        .arg(&w)
        .args(["status", "--porcelain"])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");

    // Outside the worktree: root's home and the main repository are not writable.
    let probe = format!("fleetprof-sandbox-probe-{}", std::process::id());
    for target in [Path::new("/root").join(&probe), repo.join(&probe)] {
        let c = run_command(
            "build",
            &format!("touch '{}'", target.display()),
            &w,
            Duration::from_secs(30),
        );
        assert!(!c.passed, "wrote {}: {}", target.display(), c.detail);
        assert!(
            c.detail.contains("Permission denied"),
            "{}: {}",
            target.display(),
            c.detail
        );
        assert!(!target.exists(), "{} was created", target.display());
    }
    let c = run_command(
        "build",
        &format!("echo x >> '{}/.git/config'", repo.display()),
        &w,
        Duration::from_secs(30),
    );
    assert!(!c.passed, "{}", c.detail);

    // The toolchains under root's home (rustup's cargo) are reachable, read-only.
    if Command::new("cargo").arg("--version").output().is_ok() {
        let c = run_command(
            "build",
            "cargo --version && rustc --version && ! touch \"$RUSTUP_HOME/x\"",
            &w,
            t,
        );
        assert!(c.passed, "{}", c.detail);
        assert!(c.detail.contains("cargo "), "{}", c.detail);
    }
    wt.discard();
}
