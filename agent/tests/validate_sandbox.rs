//! Repository commands run sandboxed: a build step that prints its environment sees no secret,
//! a command that times out leaves no process behind, and (as root) commands have no network.
//!
//! One test in its own binary: it sets secrets in its own environment, which must not race with
//! other tests reading it.

use std::time::Duration;

use fleetprof_agent::fix::validate::{ValidateConfig, run_command, validate};

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) {
                found.push(format!(
                    "{}: {cmdline}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    found
}

#[test]
fn commands_run_scrubbed_grouped_capped_and_offline() {
    let secrets = [
        ("OPENAI_API_KEY", "sk-fleetprof-test-openai-secret"),
        ("ANTHROPIC_API_KEY", "sk-ant-fleetprof-test-secret"),
        ("GITHUB_TOKEN", "ghp_fleetprofTestSecret"),
        ("AWS_SECRET_ACCESS_KEY", "fleetprof-test-aws-secret"),
    ];
    for (k, v) in secrets {
        // SAFETY: this binary has a single test; nothing else reads the environment concurrently.
        unsafe { std::env::set_var(k, v) };
    }
    let dir = tempfile::tempdir().unwrap();

    // 1. A build step that prints its environment sees the toolchain's variables, no secret.
    let cfg = ValidateConfig {
        build: Some("env".into()),
        ..Default::default()
    };
    let checks = validate(dir.path(), &cfg, None, "f", None, None, None);
    let env_out = &checks[0].detail;
    assert!(checks[0].passed, "{env_out}");
    assert!(
        env_out.contains("PATH="),
        "the allow-list keeps PATH: {env_out}"
    );
    for (k, v) in secrets {
        assert!(
            !env_out.contains(v),
            "{k}'s value leaked into the build: {env_out}"
        );
        assert!(!env_out.contains(k), "{k} leaked into the build: {env_out}");
    }

    // 2. A timed-out command and everything it started are killed.
    let marker = "317.4242";
    let c = run_command(
        "test",
        &format!("sleep {marker} & (sleep {marker} &) ; sleep {marker}"),
        dir.path(),
        Duration::from_secs(1),
    );
    assert!(!c.passed && c.detail.contains("timed out"), "{c:?}");
    // Killing is synchronous (SIGKILL to the group), but exit is asynchronous: wait until the
    // kernel has reaped them, up to a generous bound.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !processes_with(marker).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        processes_with(marker).is_empty(),
        "left behind: {:?}",
        processes_with(marker)
    );
    // A command that exits and leaves a daemon behind does not keep it either.
    let marker2 = "318.4242";
    let c = run_command(
        "build",
        &format!("(sleep {marker2} &) ; echo started"),
        dir.path(),
        Duration::from_secs(30),
    );
    assert!(c.passed && c.detail.contains("started"), "{c:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !processes_with(marker2).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        processes_with(marker2).is_empty(),
        "{:?}",
        processes_with(marker2)
    );

    // 3. Output is capped: 8 MiB of output keeps only the last MiB (and its end).
    let c = run_command(
        "build",
        "head -c 8388608 /dev/zero | tr '\\0' x; echo; echo the-end",
        dir.path(),
        Duration::from_secs(60),
    );
    assert!(
        c.passed,
        "{}",
        &c.detail[c.detail.len().saturating_sub(200)..]
    );
    assert!(c.detail.ends_with("the-end"), "the tail is kept");
    assert!(c.detail.len() <= fleetprof_agent::fix::validate::OUTPUT_CAP + 100);

    // 4. As root, no network: the command's namespace has only a loopback device.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let c = run_command(
            "build",
            "cat /proc/net/dev",
            dir.path(),
            Duration::from_secs(10),
        );
        assert!(c.passed, "{c:?}");
        let devices: Vec<&str> = c
            .detail
            .lines()
            .filter_map(|l| l.split_once(':').map(|(d, _)| d.trim()))
            .collect();
        assert_eq!(devices, vec!["lo"], "{}", c.detail);
    }
}
