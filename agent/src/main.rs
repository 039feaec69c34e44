//! `fleetprof-agent`: the MCP server, the fix-forward pipeline, opportunities and skills, from the
//! command line. Logs go to stderr: stdout is the MCP channel.
//!
//! Exit codes: 0 success (for `fix`/`opportunities`: a proposal was made), 1 error, 3 nothing proposed.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use fleetprof_agent::fix::pr::GitHubOptions;
use fleetprof_agent::fix::{FixOptions, FixOutcome, Fixer};
use fleetprof_agent::llm::{LlmConfig, Provider};
use fleetprof_agent::mcp::FleetprofMcp;
use fleetprof_agent::repo::Repo;
use fleetprof_agent::skills::SkillSet;
use fleetprof_agent::source::{ProfileSource, Regression, StaticSource, UnavailableSource};
use fleetprof_agent::source_clickhouse::ClickHouseSource;
use fleetprof_agent::sql::ReadOnlySql;
use fleetprof_agent::tools::ToolBox;
use fleetprof_collector::store::StoreConfig;

/// fleetprof's agent: MCP tools over fleet profiles, and validated fix-forward and opportunity PRs.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Skills directory (one folder per skill with SKILL.md). Default: ./skills.
    #[arg(
        long,
        global = true,
        env = "FLEETPROF_SKILLS",
        default_value = "skills"
    )]
    skills: PathBuf,
    /// TOML file with an [llm] table. Default: none (environment only).
    #[arg(long, global = true, env = "FLEETPROF_AGENT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

/// Where profile data comes from.
#[derive(Debug, clap::Args)]
struct SourceArgs {
    /// ClickHouse HTTP URL for profile queries and read-only SQL. Default: none (profile tools say unavailable).
    #[arg(long, env = "FLEETPROF_CLICKHOUSE_URL")]
    clickhouse_url: Option<String>,
    /// Database holding fleetprof's tables. Default: fleetprof.
    #[arg(long, env = "FLEETPROF_DATABASE", default_value = "fleetprof")]
    clickhouse_database: String,
    /// ClickHouse user for profile queries and read-only SQL (should be a readonly user). Default: the
    /// server's default user.
    #[arg(long, env = "FLEETPROF_CLICKHOUSE_USER")]
    clickhouse_user: Option<String>,
    /// ClickHouse password. Default: none.
    #[arg(long, env = "FLEETPROF_CLICKHOUSE_PASSWORD", hide_env_values = true)]
    clickhouse_password: Option<String>,
    /// JSON file with regressions (one object or a list) to serve instead of the store. Default: none.
    #[arg(long)]
    regressions_file: Option<PathBuf>,
}

/// Where `--push` opens pull requests and who is asked to review them.
#[derive(Debug, clap::Args)]
struct GitHubArgs {
    /// The GitHub repository to open pull requests in, as owner/name. Default: GITHUB_REPOSITORY,
    /// else taken from the origin remote, which must then be a github.com URL.
    #[arg(long, env = "GITHUB_REPOSITORY")]
    github_repo: Option<String>,
    /// GitHub REST API base URL (GitHub Enterprise: https://HOST/api/v3). Default:
    /// https://api.github.com.
    #[arg(long, env = "GITHUB_API_URL")]
    github_api_url: Option<String>,
    /// Map a commit author's email to their GitHub login, as EMAIL=LOGIN (repeatable), so the
    /// root-cause author is asked to review even when their email is not GitHub's no-reply address.
    /// Default: none (authors with other emails are named in PR.md but not requested).
    #[arg(long = "reviewer-map", value_name = "EMAIL=LOGIN", value_parser = parse_reviewer)]
    reviewer_map: Vec<(String, String)>,
}

impl GitHubArgs {
    fn options(&self) -> GitHubOptions {
        GitHubOptions {
            repo: self.github_repo.clone().filter(|r| !r.is_empty()),
            api_url: self.github_api_url.clone().filter(|u| !u.is_empty()),
            reviewers: self
                .reviewer_map
                .iter()
                .map(|(e, l)| (e.to_lowercase(), l.clone()))
                .collect(),
        }
    }
}

fn parse_reviewer(s: &str) -> Result<(String, String), String> {
    let (email, login) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not EMAIL=LOGIN"))?;
    let (email, login) = (email.trim(), login.trim().trim_start_matches('@'));
    if !email.contains('@') || login.is_empty() || login.contains(char::is_whitespace) {
        return Err(format!("{s:?} is not EMAIL=LOGIN"));
    }
    Ok((email.to_string(), login.to_string()))
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve the tools over MCP on stdio.
    Mcp {
        #[command(flatten)]
        source: SourceArgs,
        /// The service's repository, for the change and code tools, and for the fix tools
        /// (validate_patch, propose_fix), which are offered only with a repository. Default: none.
        #[arg(long)]
        repo: Option<PathBuf>,
        /// Model provider propose_fix falls back to when no recipe works and the client sends no
        /// diff: openai, anthropic or none. Default: from the config file / FLEETPROF_LLM_PROVIDER,
        /// else none.
        #[arg(long)]
        llm: Option<String>,
        /// Where propose_fix writes proposals. Default: ./fleetprof-outbox.
        #[arg(long, default_value = "fleetprof-outbox")]
        outbox: PathBuf,
    },
    /// Fix forward a regression: patch, validate in a worktree, branch + PR.md (+ PR with --push).
    Fix {
        /// The regression id.
        #[arg(long)]
        regression: String,
        /// The service's repository.
        #[arg(long)]
        repo: PathBuf,
        /// Model provider when no recipe works: openai, anthropic or none. Default: from the config
        /// file / FLEETPROF_LLM_PROVIDER, else none.
        #[arg(long)]
        llm: Option<String>,
        /// Push the branch and open a GitHub PR (needs GITHUB_TOKEN), requesting the root-cause
        /// author as reviewer. Default: off.
        #[arg(long)]
        push: bool,
        /// Where proposals are written. Default: ./fleetprof-outbox.
        #[arg(long, default_value = "fleetprof-outbox")]
        outbox: PathBuf,
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        github: GitHubArgs,
    },
    /// Find hot functions that match an opportunity skill and propose validated improvements.
    Opportunities {
        /// The service.
        #[arg(long)]
        service: String,
        /// The service's repository.
        #[arg(long)]
        repo: PathBuf,
        /// Look at these functions instead of the service's top functions (repeatable). Default: top functions.
        #[arg(long = "function")]
        functions: Vec<String>,
        /// Profile window for the top functions, a duration ago. Default: 1h.
        #[arg(long, default_value = "1h")]
        window: String,
        /// How many top functions to consider. Default: 10.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Model provider when no recipe works. Default: config / environment, else none.
        #[arg(long)]
        llm: Option<String>,
        /// Push branches and open PRs. Default: off.
        #[arg(long)]
        push: bool,
        /// Where proposals are written. Default: ./fleetprof-outbox.
        #[arg(long, default_value = "fleetprof-outbox")]
        outbox: PathBuf,
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        github: GitHubArgs,
    },
    /// Run the fix pipeline on a corpus of seeded regressions (small services in C, C++, Go, Rust,
    /// Java and Python, each with a known root cause) and print, per case, whether a patch was
    /// produced (fixed), passed validation (validated) or was declined (refused). Exit status 4
    /// when a case did not end as expected.
    Eval {
        /// Who fixes: none (the skills' recipes), openai or anthropic (the model, with the recipes
        /// set aside so the model does the fixing). Default: none.
        #[arg(long, default_value = "none")]
        llm: String,
        /// Model name. Default: the config file / FLEETPROF_LLM_MODEL, else the provider's default.
        #[arg(long)]
        model: Option<String>,
        /// Run only this case (repeatable). Default: every case.
        #[arg(long = "case")]
        cases: Vec<String>,
        /// Re-profile each workload with the real eBPF profiler (needs root). Default: off (build
        /// and tests only).
        #[arg(long)]
        reprofile: bool,
        /// Keep the cases' repositories and outboxes in this directory. Default: a temporary
        /// directory, removed at the end.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Print the results as JSON instead of a table. Default: off.
        #[arg(long)]
        json: bool,
    },
    /// List or show skills.
    Skills {
        #[command(subcommand)]
        action: SkillsCmd,
    },
}

#[derive(Debug, Subcommand)]
enum SkillsCmd {
    /// List the skills.
    List,
    /// Print one skill with its example.
    Show {
        /// The skill's name.
        name: String,
    },
}

async fn source(args: &SourceArgs) -> Result<Arc<dyn ProfileSource>> {
    if let Some(path) = &args.regressions_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let regressions: Vec<Regression> = match serde_json::from_str::<Vec<Regression>>(&text) {
            Ok(v) => v,
            Err(_) => vec![
                serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?,
            ],
        };
        return Ok(Arc::new(StaticSource {
            regressions,
            ..Default::default()
        }));
    }
    if let Some(url) = &args.clickhouse_url {
        let mut cfg = StoreConfig::new(url).with_database(&args.clickhouse_database);
        if args.clickhouse_user.is_some() || args.clickhouse_password.is_some() {
            cfg = cfg.with_credentials(
                args.clickhouse_user.as_deref().unwrap_or("default"),
                args.clickhouse_password.clone().unwrap_or_default(),
            );
        }
        let src = ClickHouseSource::connect(&cfg)
            .await
            .with_context(|| format!("profile store at {url}"))?;
        return Ok(Arc::new(src));
    }
    Ok(Arc::new(UnavailableSource))
}

async fn toolbox(skills: SkillSet, args: &SourceArgs, repo: Option<&PathBuf>) -> Result<ToolBox> {
    let mut tb = ToolBox::new(source(args).await?, skills);
    if let Some(r) = repo {
        let root = r
            .canonicalize()
            .with_context(|| format!("repository {}", r.display()))?;
        tb = tb.with_repo(Repo::new(root));
    }
    if let Some(url) = &args.clickhouse_url {
        let mut sql = ReadOnlySql::new(url.clone());
        sql.user = args.clickhouse_user.clone();
        sql.password = args.clickhouse_password.clone();
        sql.database = Some(args.clickhouse_database.clone());
        tb = tb.with_sql(sql);
    }
    Ok(tb)
}

fn fix_options(
    cli: &Cli,
    llm: Option<&str>,
    push: bool,
    outbox: PathBuf,
    github: GitHubOptions,
) -> Result<FixOptions> {
    let mut cfg = LlmConfig::load(cli.config.as_deref())?;
    if let Some(p) = llm {
        cfg.provider = p.parse::<Provider>()?;
        cfg.apply_env(|k| {
            (k != "FLEETPROF_LLM_PROVIDER")
                .then(|| std::env::var(k).ok())
                .flatten()
                .filter(|v| !v.is_empty())
        })?;
    }
    Ok(FixOptions {
        outbox,
        push,
        model: cfg.build()?,
        limits: cfg.limits(),
        // Validation re-profiles the repository's workload with the real eBPF profiler.
        reprofiler: Some(Arc::new(
            fleetprof_agent::reprofile::ProfilerReprofiler::discover(),
        )),
        github,
    })
}

fn report(outcome: &FixOutcome) -> bool {
    match outcome {
        FixOutcome::Proposed(p) => {
            println!(
                "proposed {} on branch {} ({}, {}): {}",
                p.id,
                p.branch,
                p.skill,
                p.produced_by,
                p.outbox_dir.join("PR.md").display()
            );
            if let Some(url) = &p.pr_url {
                println!("pull request: {url}");
            }
            true
        }
        FixOutcome::NotProposed { id, attempts } => {
            println!("nothing proposed for {id}:");
            for a in attempts {
                println!("  {} ({}): {}", a.skill, a.produced_by, a.reason);
            }
            false
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let load_skills = || {
        SkillSet::load(&cli.skills)
            .with_context(|| format!("loading skills from {}", cli.skills.display()))
    };
    match &cli.command {
        Cmd::Mcp {
            source,
            repo,
            llm,
            outbox,
        } => {
            let tb = toolbox(load_skills()?, source, repo.as_ref()).await?;
            tracing::info!(?tb, "serving MCP on stdio");
            let mut server = FleetprofMcp::new(tb.clone());
            if repo.is_some() {
                let opts = fix_options(
                    &cli,
                    llm.as_deref(),
                    false,
                    outbox.clone(),
                    GitHubOptions::default(),
                )?;
                server = server.with_fixer(Fixer::new(tb, opts));
            }
            server.serve_stdio().await?;
        }
        Cmd::Fix {
            regression,
            repo,
            llm,
            push,
            outbox,
            source,
            github,
        } => {
            let tb = toolbox(load_skills()?, source, Some(repo)).await?;
            let opts = fix_options(
                &cli,
                llm.as_deref(),
                *push,
                outbox.clone(),
                github.options(),
            )?;
            let outcome = Fixer::new(tb, opts).fix_regression(regression).await?;
            if !report(&outcome) {
                std::process::exit(3);
            }
        }
        Cmd::Opportunities {
            service,
            repo,
            functions,
            window,
            limit,
            llm,
            push,
            outbox,
            source,
            github,
        } => {
            let tb = toolbox(load_skills()?, source, Some(repo)).await?;
            let opts = fix_options(
                &cli,
                llm.as_deref(),
                *push,
                outbox.clone(),
                github.options(),
            )?;
            let fixer = Fixer::new(tb.clone(), opts);
            let results = fleetprof_agent::opportunities::find_opportunities(
                &tb, &fixer, service, functions, window, *limit,
            )
            .await?;
            let mut any = false;
            for r in &results {
                println!("{} ({:.2}%):", r.function, r.share * 100.0);
                any |= report(&r.outcome);
            }
            if results.is_empty() {
                println!("no hot function of {service} is defined in the repository");
            }
            if !any {
                std::process::exit(3);
            }
        }
        Cmd::Eval {
            llm,
            model,
            cases,
            reprofile,
            keep,
            json,
        } => {
            let mut opts = fix_options(
                &cli,
                Some(llm.as_str()),
                false,
                PathBuf::new(),
                GitHubOptions::default(),
            )?;
            if let Some(m) = model {
                let mut cfg = LlmConfig::load(cli.config.as_deref())?;
                cfg.provider = llm.parse::<Provider>()?;
                cfg.apply_env(|k| {
                    (k != "FLEETPROF_LLM_PROVIDER")
                        .then(|| std::env::var(k).ok())
                        .flatten()
                        .filter(|v| !v.is_empty())
                })?;
                cfg.model = Some(m.clone());
                opts.model = cfg.build()?;
            }
            if !reprofile {
                opts.reprofiler = None;
            }
            let mut skills = load_skills()?;
            if opts.model.is_some() {
                skills = fleetprof_agent::eval::without_recipes(&skills);
            }
            let all = fleetprof_agent::eval::corpus();
            let unknown: Vec<&String> = cases
                .iter()
                .filter(|c| !all.iter().any(|k| k.name == c.as_str()))
                .collect();
            if !unknown.is_empty() {
                let names: Vec<&str> = all.iter().map(|c| c.name).collect();
                bail!(
                    "no case named {unknown:?}; the cases are {}",
                    names.join(", ")
                );
            }
            let chosen: Vec<_> = all
                .into_iter()
                .filter(|c| cases.is_empty() || cases.iter().any(|n| n == c.name))
                .collect();
            let tmp = tempfile::tempdir()?;
            let dir = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
            let results = fleetprof_agent::eval::run(&chosen, &skills, &opts, &dir).await;
            if *json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                print!("{}", fleetprof_agent::eval::table(&results));
            }
            if !results.iter().all(|r| r.as_expected()) {
                std::process::exit(4);
            }
        }
        Cmd::Skills { action } => {
            let skills = load_skills()?;
            match action {
                SkillsCmd::List => {
                    for s in skills.all() {
                        let kinds: Vec<String> =
                            s.applies_to.iter().map(ToString::to_string).collect();
                        let recipe = s
                            .summary()
                            .recipe
                            .map(|r| format!(" [recipe {r}]"))
                            .unwrap_or_default();
                        println!(
                            "{:<28} {:<24}{} {}",
                            s.name,
                            kinds.join(","),
                            recipe,
                            s.description
                        );
                    }
                }
                SkillsCmd::Show { name } => match skills.get(name) {
                    Some(s) => print!("{}", s.render()),
                    None => bail!("no skill named {name:?}"),
                },
            }
        }
    }
    Ok(())
}
