//! Offense: hot functions whose code matches an opportunity skill become validated PRs.
//!
//! Takes a service's hottest functions from the profile source (or functions named by the caller),
//! finds each in the repository, and runs the same pipeline as a fix ([`Fixer::propose`]) with
//! opportunity skills: recipe or model → worktree validation → branch `fleetprof/opportunity-<id>`,
//! `PR.md` in the outbox.

use crate::fix::{FixError, FixOutcome, Fixer, Target, sanitize_id};
use crate::repo::symbol_segments;
use crate::skills::SkillKind;
use crate::source::{FunctionShare, SourceError};
use crate::tools::{ToolBox, parse_range};

/// What can go wrong looking for opportunities.
#[derive(Debug, thiserror::Error)]
pub enum OpportunityError {
    /// The profile source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The pipeline failed.
    #[error(transparent)]
    Fix(#[from] FixError),
}

/// The outcome for one hot function.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpportunityResult {
    /// The function.
    pub function: String,
    /// Its share of the service's CPU.
    pub share: f64,
    /// What the pipeline did.
    pub outcome: FixOutcome,
}

/// Looks at `service`'s hottest functions that the repository defines (the last `window`, at most
/// `limit` of them; or `functions` when given, with unknown shares) and proposes validated
/// improvements for those that match a skill.
pub async fn find_opportunities(
    tools: &ToolBox,
    fixer: &Fixer,
    service: &str,
    functions: &[String],
    window: &str,
    limit: usize,
) -> Result<Vec<OpportunityResult>, OpportunityError> {
    let hot: Vec<FunctionShare> = if functions.is_empty() {
        let range = parse_range(Some(window), None, "1h").map_err(SourceError::Invalid)?;
        // Runtime frames (`main`, `std::rt::lang_start…`, libc) are on every stack and fill the top
        // of a ranking by total share: look further down, and count only the repository's functions.
        let fetch = limit.saturating_mul(4).max(limit.saturating_add(40));
        tools.source().top_functions(service, range, fetch).await?
    } else {
        functions
            .iter()
            .map(|f| FunctionShare {
                function: f.clone(),
                self_samples: 0,
                total_samples: 0,
                share: 0.0,
            })
            .collect()
    };
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for f in hot {
        if functions.is_empty() && seen.len() >= limit {
            break;
        }
        // Only functions the repository defines can be changed.
        let Some(repo) = tools.repo() else { break };
        if repo
            .find_function(&f.function)
            .map_err(FixError::from)?
            .is_none()
        {
            tracing::debug!(function = %f.function, "not defined in the repository; skipped");
            continue;
        }
        let name = symbol_segments(&f.function)
            .last()
            .cloned()
            .unwrap_or_else(|| f.function.clone());
        let id = sanitize_id(&format!("{service}-{name}"));
        // Symbols naming the same function (`main`, `svc::main`) are looked at once.
        if !seen.insert(id.clone()) {
            continue;
        }
        let target = Target {
            id,
            kind: SkillKind::Opportunity,
            service: service.to_string(),
            function: f.function.clone(),
            shares: (None, f.share),
            root_cause: None,
            additions: Vec::new(),
            frames: Vec::new(),
            cost: None,
            locations: tools
                .source()
                .locations(&f.function)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|l| (l.file, l.line))
                .collect(),
            located: None,
        };
        let outcome = fixer.propose(&target).await?;
        out.push(OpportunityResult {
            function: f.function,
            share: f.share,
            outcome,
        });
    }
    Ok(out)
}
