//! `cargo xtask eval agent`: measure the agent's fix pipeline — its recipes, or a model — on the
//! corpus of seeded regressions (`fleetprof-agent eval`), printing fixed / validated / refused per
//! case.

use std::process::Command;

use anyhow::{Result, bail};

use crate::{
    cmd::{self, cargo, workspace_root},
    setup, workspace,
};

/// Options of `cargo xtask eval`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// What to evaluate.
    #[command(subcommand)]
    what: What,
}

/// What can be evaluated.
#[derive(Debug, clap::Subcommand)]
enum What {
    /// The agent on the seeded-regression corpus (C, C++, Go, Rust, Java, Python services with a
    /// known root cause). With `--llm openai|anthropic` the skills' recipes are set aside and the
    /// model fixes every case; the key comes from OPENAI_API_KEY / ANTHROPIC_API_KEY (and
    /// OPENAI_BASE_URL / ANTHROPIC_BASE_URL for other endpoints).
    Agent(AgentArgs),
}

/// Options of `cargo xtask eval agent`.
#[derive(Debug, clap::Args)]
struct AgentArgs {
    /// Who fixes: none (the recipes), openai or anthropic. Default: none.
    #[arg(long, default_value = "none")]
    llm: String,
    /// The model's name. Default: the provider's default (gpt-4o, claude-sonnet-4-5).
    #[arg(long)]
    model: Option<String>,
    /// Run only this case (repeatable). Default: every case.
    #[arg(long = "case")]
    cases: Vec<String>,
    /// Re-profile each workload with the real eBPF profiler (needs root). Default: off.
    #[arg(long)]
    reprofile: bool,
    /// Print JSON instead of a table. Default: off.
    #[arg(long)]
    json: bool,
}

/// Builds `fleetprof-agent` and runs its `eval` command.
pub(crate) fn run(args: &Args) -> Result<()> {
    let What::Agent(a) = &args.what;
    if cmd::is_root() {
        // The cases build with gcc, g++, go, javac and python3, which setup installs.
        setup::ensure()?;
    }
    cmd::run(
        "eval: build fleetprof-agent",
        &mut cargo(["build", "-p", "fleetprof-agent"]),
    )?;
    let bin = workspace::target_dir(&workspace::metadata()?)
        .join("debug")
        .join("fleetprof-agent");
    let mut eval = Command::new(bin);
    eval.arg("eval")
        .arg("--skills")
        .arg(workspace_root().join("skills"))
        .args(["--llm", &a.llm]);
    if let Some(m) = &a.model {
        eval.args(["--model", m]);
    }
    for c in &a.cases {
        eval.args(["--case", c]);
    }
    if a.reprofile {
        eval.arg("--reprofile");
    }
    if a.json {
        eval.arg("--json");
    }
    cmd::header("eval: run the corpus", Some(&eval));
    let status = eval.status()?;
    match status.code() {
        Some(0) => Ok(()),
        Some(4) => bail!("some cases did not end as expected (see the table)"),
        _ => bail!("fleetprof-agent eval failed: {status}"),
    }
}
