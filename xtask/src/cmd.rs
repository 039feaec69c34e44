//! Running the commands a task is made of: print a header and the command line, run it, check
//! its exit status, print how long it took.

use std::{
    collections::VecDeque,
    ffi::OsStr,
    fmt::Write as _,
    io::{BufRead as _, BufReader, IsTerminal as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

/// How many lines of a hidden command's output to show when it fails.
const FAILURE_TAIL_LINES: usize = 60;

/// The workspace root (the parent of `xtask/`); every command runs there.
pub(crate) fn workspace_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
    })
}

/// A `cargo` command (the rustup proxy on `PATH`) that runs in the workspace root.
///
/// Pass `+nightly` as the first argument for the eBPF toolchain; the proxy honours it over the
/// `RUSTUP_TOOLCHAIN` that `cargo xtask` itself runs under.
pub(crate) fn cargo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("cargo");
    cmd.args(args).current_dir(workspace_root());
    cmd
}

/// Prints a step's header: what it does and the exact command line.
pub(crate) fn header(title: &str, cmd: Option<&Command>) {
    println!();
    println!("==> {title}");
    if let Some(cmd) = cmd {
        println!("    $ {}", display(cmd));
    }
}

/// Runs `cmd` with the terminal attached after printing `title` and the command line; fails
/// unless it exits successfully. Returns how long it ran.
pub(crate) fn run(title: &str, cmd: &mut Command) -> Result<Duration> {
    header(title, Some(cmd));
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!(
            "`{}` failed ({status}) after {}",
            display(cmd),
            fmt_duration(elapsed)
        );
    }
    println!("<== done in {}", fmt_duration(elapsed));
    Ok(elapsed)
}

/// Like [`run`], but for long, chatty commands: the output is hidden behind a spinner that shows
/// the latest line, and the last lines are printed if the command fails.
///
/// When stderr is not a terminal (CI logs), the output is passed through instead, so that a log
/// shows progress rather than minutes of silence.
pub(crate) fn run_with_spinner(title: &str, cmd: &mut Command) -> Result<Duration> {
    if !std::io::stderr().is_terminal() {
        return run(title, cmd);
    }
    header(title, Some(cmd));
    let start = Instant::now();
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("    {spinner} [{elapsed_precise}] {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner.set_message("starting");

    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    // Both pipes are read to the end so that the child never blocks on a full pipe; stderr
    // (where cargo reports progress) drives the spinner.
    let stdout_reader = thread::spawn(move || {
        let mut lines = Vec::new();
        if let Some(stdout) = stdout {
            lines.extend(BufReader::new(stdout).lines().map_while(Result::ok));
        }
        lines
    });
    let mut tail = VecDeque::with_capacity(FAILURE_TAIL_LINES);
    if let Some(stderr) = stderr {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let trimmed = line.trim();
            if !trimmed.is_empty() {
                spinner.set_message(trimmed.to_owned());
            }
            if tail.len() == FAILURE_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
    let stdout_lines = stdout_reader.join().unwrap_or_default();
    let status = child
        .wait()
        .with_context(|| format!("could not wait for `{}`", display(cmd)))?;
    let elapsed = start.elapsed();
    spinner.finish_and_clear();

    if !status.success() {
        eprintln!("    last lines of its output:");
        for line in stdout_lines.iter().chain(tail.iter()) {
            eprintln!("    | {line}");
        }
        bail!(
            "`{}` failed ({status}) after {}",
            display(cmd),
            fmt_duration(elapsed)
        );
    }
    println!("<== done in {}", fmt_duration(elapsed));
    Ok(elapsed)
}

/// Runs a quick probe such as `bpf-linker --version` silently; returns its trimmed stdout if it
/// started and exited successfully, `None` otherwise (a missing program is an expected answer).
pub(crate) fn probe(cmd: &mut Command) -> Option<String> {
    let output = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// `cmd` as a shell line: the environment it sets, the program, its arguments, quoted where
/// needed, so that it can be copied and run by hand.
pub(crate) fn display(cmd: &Command) -> String {
    let mut line = String::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            let _ = write!(
                line,
                "{}={} ",
                key.to_string_lossy(),
                quote(&value.to_string_lossy())
            );
        }
    }
    line.push_str(&quote(&cmd.get_program().to_string_lossy()));
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(&arg.to_string_lossy()));
    }
    line
}

/// Quotes `word` for a POSIX shell if it contains anything but plain characters.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=+./:,@%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A duration for people: `850 ms`, `12.3 s`, `3m 05s`.
pub(crate) fn fmt_duration(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 1.0 {
        format!("{} ms", duration.as_millis())
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        let whole = duration.as_secs();
        format!("{}m {:02}s", whole / 60, whole % 60)
    }
}

/// A task's steps, run one after another: each step's outcome and duration, and a summary at the
/// end (also when a step fails, so that the failing step is the last line before the error).
pub(crate) struct Steps {
    /// The task, for the summary's heading.
    task: &'static str,
    /// When the task started.
    start: Instant,
    /// Each step run so far: its name and, if it succeeded, how long it took.
    done: Vec<(String, Option<Duration>)>,
}

impl Steps {
    /// Starts a task called `task`.
    pub(crate) fn new(task: &'static str) -> Self {
        Self {
            task,
            start: Instant::now(),
            done: Vec::new(),
        }
    }

    /// Runs step `name`; on failure prints the summary and returns an error naming the step.
    pub(crate) fn step(&mut self, name: &str, step: impl FnOnce() -> Result<()>) -> Result<()> {
        let start = Instant::now();
        match step() {
            Ok(()) => {
                self.done.push((name.to_owned(), Some(start.elapsed())));
                Ok(())
            }
            Err(err) => {
                self.done.push((name.to_owned(), None));
                self.print_summary();
                Err(err.context(format!("{}: step `{name}` failed", self.task)))
            }
        }
    }

    /// Prints the summary of a task whose steps all succeeded.
    pub(crate) fn finish(self) {
        self.print_summary();
    }

    /// One line per step, then the total.
    fn print_summary(&self) {
        println!();
        println!("==> {} summary", self.task);
        let width = self
            .done
            .iter()
            .map(|(name, _)| name.len())
            .max()
            .unwrap_or(0);
        for (name, outcome) in &self.done {
            match outcome {
                Some(took) => println!("    ok      {name:<width$}  {}", fmt_duration(*took)),
                None => println!("    FAILED  {name}"),
            }
        }
        let failed = self.done.iter().any(|(_, outcome)| outcome.is_none());
        println!(
            "<== {} {} in {}",
            self.task,
            if failed { "FAILED" } else { "passed" },
            fmt_duration(self.start.elapsed())
        );
    }
}

/// Whether this process runs as root (apt-get and `/usr/local` need it, and so do eBPF programs).
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command line is shown the way a shell would accept it.
    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let mut cmd = Command::new("cargo");
        cmd.args(["clippy", "--", "-D", "warnings", "a b", "it's"])
            .env("LLVM_PREFIX", "/usr/local/lib/fleetprof-llvm");
        assert_eq!(
            display(&cmd),
            r"LLVM_PREFIX=/usr/local/lib/fleetprof-llvm cargo clippy -- -D warnings 'a b' 'it'\''s'"
        );
    }

    /// A failing step stops the task with an error that names the step and keeps the cause.
    #[test]
    fn failing_step_is_named() {
        let mut steps = Steps::new("test");
        steps.step("fmt", || Ok(())).expect("fmt passes");
        let err = steps
            .step("clippy", || bail!("`cargo clippy` failed"))
            .expect_err("clippy fails");
        assert_eq!(
            format!("{err:#}"),
            "test: step `clippy` failed: `cargo clippy` failed"
        );
    }

    /// Durations are short and readable at every scale.
    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_duration(Duration::from_millis(850)), "850 ms");
        assert_eq!(fmt_duration(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(fmt_duration(Duration::from_secs(185)), "3m 05s");
    }
}
