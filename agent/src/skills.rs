//! Skills: load `SKILL.md` files and choose the ones that fit a regression or an opportunity.
//!
//! A skill is a folder with a `SKILL.md` in the Agent Skills layout: YAML front matter with `name` and
//! `description`, then Markdown instructions. fleetprof adds front-matter fields that say when a skill
//! applies (`applies_to`, `signs`, `diff_signs`, `languages`) and, optionally, a deterministic `recipe`
//! the fix pipeline can apply without a model.
//!
//! ```no_run
//! use fleetprof_agent::skills::{MatchInput, SkillKind, SkillSet};
//! let skills = SkillSet::load("skills").unwrap();
//! let input = MatchInput {
//!     kind: SkillKind::Regression,
//!     functions: vec!["core::fmt::write".into()],
//!     code_lines: vec!["println!(\"{x}\");".into()],
//!     languages: vec!["rust".into()],
//! };
//! for m in skills.matching(&input) {
//!     println!("{} (score {})", m.skill.name, m.score);
//! }
//! ```

use std::path::{Path, PathBuf};

use regex::Regex;
use serde::{Deserialize, Serialize};

/// What can go wrong loading skills.
#[derive(Debug, thiserror::Error)]
pub enum SkillsError {
    /// The skills directory or a `SKILL.md` could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A `SKILL.md` does not start with a `---` delimited YAML front matter block.
    #[error("{path}: no YAML front matter (the file must start with a line `---`)")]
    NoFrontMatter {
        /// The file.
        path: PathBuf,
    },
    /// The front matter is not valid YAML for a skill.
    #[error("{path}: front matter: {source}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The YAML error.
        #[source]
        source: serde_yaml::Error,
    },
    /// A `signs` or `diff_signs` pattern is not a valid regex.
    #[error("{path}: pattern {pattern:?}: {source}")]
    Pattern {
        /// The file.
        path: PathBuf,
        /// The pattern.
        pattern: String,
        /// The regex error.
        #[source]
        source: regex::Error,
    },
    /// The front matter's `name` differs from the folder name.
    #[error("{path}: name {name:?} does not match its folder {folder:?}")]
    NameMismatch {
        /// The file.
        path: PathBuf,
        /// The declared name.
        name: String,
        /// The folder name.
        folder: String,
    },
}

/// Whether a skill is for fixing a regression (defense) or for an efficiency opportunity (offense).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SkillKind {
    /// Fix forward a detected regression.
    #[default]
    Regression,
    /// Improve a hot function that has not regressed.
    Opportunity,
}

impl std::fmt::Display for SkillKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SkillKind::Regression => "regression",
            SkillKind::Opportunity => "opportunity",
        })
    }
}

/// One text rewrite of a regex recipe: `find` is a regex, `replace` may use `$1`/`${name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteRule {
    /// The regex to find (multi-line mode is on).
    pub find: String,
    /// The replacement, with `$n` / `${name}` capture references.
    pub replace: String,
}

/// A deterministic change a skill can make without a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecipeSpec {
    /// A recipe implemented in Rust, named (e.g. `guard-logging`, `memoize`, `hoist-regex`).
    Builtin(String),
    /// Regex rewrites applied in order to the file holding the function.
    Rewrite {
        /// The rules.
        rewrite: Vec<RewriteRule>,
    },
}

/// A worked example shipped in the skill's folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    /// Path of the file before the fix, relative to the skill folder.
    pub before: PathBuf,
    /// Path of the file after the fix, relative to the skill folder.
    pub after: PathBuf,
}

/// `one` or `[one, two]` in YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The front matter as written in `SKILL.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontMatter {
    name: String,
    description: String,
    #[serde(default)]
    applies_to: Option<OneOrMany>,
    #[serde(default)]
    signs: Option<OneOrMany>,
    #[serde(default)]
    diff_signs: Option<OneOrMany>,
    #[serde(default)]
    languages: Option<OneOrMany>,
    #[serde(default)]
    recipe: Option<RecipeSpec>,
    #[serde(default)]
    example: Option<Example>,
    // Agent Skills optional fields, accepted and kept out of the way.
    #[serde(default)]
    license: Option<String>,
    #[serde(default)]
    metadata: Option<serde_yaml::Value>,
    #[serde(default, rename = "allowed-tools")]
    allowed_tools: Option<serde_yaml::Value>,
}

/// A loaded skill.
#[derive(Debug, Clone)]
pub struct Skill {
    /// The skill's name (equals its folder name).
    pub name: String,
    /// What it is for and when to use it (shown to models).
    pub description: String,
    /// Whether it fixes regressions, finds opportunities, or both.
    pub applies_to: Vec<SkillKind>,
    /// Regexes over function names (the regressed function and its stacks) that signal the skill.
    pub signs: Vec<Regex>,
    /// Regexes over the root-cause diff's added lines (or, for opportunities, the function's code).
    pub diff_signs: Vec<Regex>,
    /// Languages the skill knows (lower case, e.g. `rust`); empty means any.
    pub languages: Vec<String>,
    /// A deterministic recipe, if any.
    pub recipe: Option<RecipeSpec>,
    /// A worked example, if any.
    pub example: Option<Example>,
    /// The Markdown instructions after the front matter.
    pub instructions: String,
    /// The skill's folder.
    pub dir: PathBuf,
}

/// A summary of a skill for listings (tools, CLI).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SkillSummary {
    /// The skill's name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// regression and/or opportunity.
    pub applies_to: Vec<SkillKind>,
    /// The name of its recipe, if it has one (`rewrite` for regex rewrites).
    pub recipe: Option<String>,
}

impl Skill {
    /// Parses a skill from the text of its `SKILL.md`; `dir` is the skill's folder.
    pub fn parse(text: &str, dir: &Path) -> Result<Skill, SkillsError> {
        let path = dir.join("SKILL.md");
        let (yaml, body) = split_front_matter(text)
            .ok_or_else(|| SkillsError::NoFrontMatter { path: path.clone() })?;
        let fm: FrontMatter = serde_yaml::from_str(yaml).map_err(|source| SkillsError::Yaml {
            path: path.clone(),
            source,
        })?;
        let _ = (&fm.license, &fm.metadata, &fm.allowed_tools);
        let compile = |pats: Option<OneOrMany>| -> Result<Vec<Regex>, SkillsError> {
            pats.map(OneOrMany::into_vec)
                .unwrap_or_default()
                .into_iter()
                .map(|p| {
                    Regex::new(&p).map_err(|source| SkillsError::Pattern {
                        path: path.clone(),
                        pattern: p.clone(),
                        source,
                    })
                })
                .collect()
        };
        let applies_to = match fm.applies_to {
            None => vec![SkillKind::Regression, SkillKind::Opportunity],
            Some(v) => v
                .into_vec()
                .into_iter()
                .map(|k| {
                    serde_yaml::from_value(serde_yaml::Value::String(k)).map_err(|source| {
                        SkillsError::Yaml {
                            path: path.clone(),
                            source,
                        }
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Skill {
            signs: compile(fm.signs)?,
            diff_signs: compile(fm.diff_signs)?,
            name: fm.name,
            description: fm.description,
            applies_to,
            languages: fm
                .languages
                .map(OneOrMany::into_vec)
                .unwrap_or_default()
                .into_iter()
                .map(|l| l.to_lowercase())
                .collect(),
            recipe: fm.recipe,
            example: fm.example,
            instructions: body.trim().to_string(),
            dir: dir.to_path_buf(),
        })
    }

    /// The summary shown in listings.
    pub fn summary(&self) -> SkillSummary {
        SkillSummary {
            name: self.name.clone(),
            description: self.description.clone(),
            applies_to: self.applies_to.clone(),
            recipe: self.recipe.as_ref().map(|r| match r {
                RecipeSpec::Builtin(n) => n.clone(),
                RecipeSpec::Rewrite { .. } => "rewrite".to_string(),
            }),
        }
    }

    /// The full text of the skill for a model: front-matter facts, instructions and the worked example.
    pub fn render(&self) -> String {
        let mut out = format!(
            "# skill: {}\n{}\n\n{}\n",
            self.name, self.description, self.instructions
        );
        if let Some(ex) = &self.example {
            for (label, p) in [("before", &ex.before), ("after", &ex.after)] {
                if let Ok(text) = std::fs::read_to_string(self.dir.join(p)) {
                    out.push_str(&format!(
                        "\n## example {label} ({})\n```\n{text}```\n",
                        p.display()
                    ));
                }
            }
        }
        out
    }
}

/// Splits `---\nyaml\n---\nbody` into its two parts.
fn split_front_matter(text: &str) -> Option<(&str, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let rest = text.strip_prefix("---")?;
    let rest = rest
        .strip_prefix("\r\n")
        .or_else(|| rest.strip_prefix('\n'))?;
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some((&rest[..offset], &rest[offset + line.len()..]));
        }
        offset += line.len();
    }
    None
}

/// What a skill is matched against.
#[derive(Debug, Clone, Default)]
pub struct MatchInput {
    /// Regression or opportunity.
    pub kind: SkillKind,
    /// Function names: the regressed (or hot) function first, then frames of its stacks.
    pub functions: Vec<String>,
    /// For a regression, the root-cause diff's added lines; for an opportunity, the function's code.
    pub code_lines: Vec<String>,
    /// Languages of the files involved (lower case); empty means unknown.
    pub languages: Vec<String>,
}

/// A skill that fits, with why.
#[derive(Debug, Clone)]
pub struct SkillMatch<'a> {
    /// The skill.
    pub skill: &'a Skill,
    /// Higher is a better fit: a matching diff sign counts 3, a matching profile sign 2, a recipe 1.
    pub score: u32,
    /// Human-readable reasons (which pattern matched what).
    pub reasons: Vec<String>,
}

/// All skills from a directory.
#[derive(Debug, Clone, Default)]
pub struct SkillSet {
    skills: Vec<Skill>,
}

impl SkillSet {
    /// Loads every `*/SKILL.md` under `dir`, sorted by name.
    pub fn load(dir: impl AsRef<Path>) -> Result<SkillSet, SkillsError> {
        let dir = dir.as_ref();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SkillsError::Io { path, source }
        };
        let mut skills = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let md = entry.path().join("SKILL.md");
            if !md.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&md).map_err(io(&md))?;
            let skill = Skill::parse(&text, &entry.path())?;
            let folder = entry.file_name().to_string_lossy().into_owned();
            if skill.name != folder {
                return Err(SkillsError::NameMismatch {
                    path: md,
                    name: skill.name,
                    folder,
                });
            }
            skills.push(skill);
        }
        skills.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(SkillSet { skills })
    }

    /// A set made of the given skills.
    pub fn from_skills(mut skills: Vec<Skill>) -> SkillSet {
        skills.sort_by(|a, b| a.name.cmp(&b.name));
        SkillSet { skills }
    }

    /// All skills, by name.
    pub fn all(&self) -> &[Skill] {
        &self.skills
    }

    /// The skill called `name`.
    pub fn get(&self, name: &str) -> Option<&Skill> {
        self.skills.iter().find(|s| s.name == name)
    }

    /// The skills whose conditions hold for `input`, best first.
    ///
    /// A skill matches when it applies to `input.kind`, shares a language with the input (when both
    /// say), at least one of its `signs` matches a function (when it has signs), and at least one of its
    /// `diff_signs` matches a code line (when it has diff signs and there are lines). Skills with no
    /// conditions at all (e.g. `triage-regression`) always match, with score 0.
    pub fn matching(&self, input: &MatchInput) -> Vec<SkillMatch<'_>> {
        let mut out: Vec<SkillMatch<'_>> = self
            .skills
            .iter()
            .filter_map(|s| match_skill(s, input))
            .collect();
        out.sort_by(|a, b| b.score.cmp(&a.score).then(a.skill.name.cmp(&b.skill.name)));
        out
    }
}

fn match_skill<'a>(skill: &'a Skill, input: &MatchInput) -> Option<SkillMatch<'a>> {
    if !skill.applies_to.contains(&input.kind) {
        return None;
    }
    let mut score = 0;
    let mut reasons = Vec::new();
    if !skill.languages.is_empty() && !input.languages.is_empty() {
        let lang = input
            .languages
            .iter()
            .find(|l| skill.languages.contains(&l.to_lowercase()))?;
        reasons.push(format!("language {lang}"));
    }
    if !skill.signs.is_empty() {
        let hit = skill.signs.iter().find_map(|re| {
            input
                .functions
                .iter()
                .find(|f| re.is_match(f))
                .map(|f| (re, f))
        })?;
        score += 2;
        reasons.push(format!("function {:?} matches sign /{}/", hit.1, hit.0));
    }
    if !skill.diff_signs.is_empty() && !input.code_lines.is_empty() {
        let hit = skill.diff_signs.iter().find_map(|re| {
            input
                .code_lines
                .iter()
                .find(|l| re.is_match(l))
                .map(|l| (re, l))
        })?;
        score += 3;
        reasons.push(format!(
            "line {:?} matches diff sign /{}/",
            hit.1.trim(),
            hit.0
        ));
    }
    if skill.recipe.is_some() && score > 0 {
        score += 1;
    }
    Some(SkillMatch {
        skill,
        score,
        reasons,
    })
}

/// The language of a file, from its extension (`rust`, `c`, `cpp`, `go`, `java`, `python`), if
/// fleetprof can parse it (the workspace's one language table, [`fleetprof_code::Language`]).
pub fn language_of(path: &Path) -> Option<&'static str> {
    fleetprof_code::Language::of(path.to_str()?).map(fleetprof_code::Language::name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_skills() -> SkillSet {
        SkillSet::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../skills")).unwrap()
    }

    /// The repository's skills all parse and the required ones are there.
    #[test]
    fn repository_skills_parse() {
        let set = repo_skills();
        for name in [
            "triage-regression",
            "logging-in-hot-path",
            "allocation-in-hot-loop",
            "regex-built-per-call",
            "serialization-schema-change",
            "memoize-pure-function",
        ] {
            let s = set
                .get(name)
                .unwrap_or_else(|| panic!("missing skill {name}"));
            assert!(!s.description.is_empty(), "{name} has no description");
            assert!(!s.instructions.is_empty(), "{name} has no instructions");
            if let Some(ex) = &s.example {
                assert!(
                    s.dir.join(&ex.before).is_file(),
                    "{name}: example before missing"
                );
                assert!(
                    s.dir.join(&ex.after).is_file(),
                    "{name}: example after missing"
                );
            }
        }
        assert_eq!(
            set.get("logging-in-hot-path").unwrap().recipe,
            Some(RecipeSpec::Builtin("guard-logging".into()))
        );
        assert_eq!(
            set.get("memoize-pure-function").unwrap().applies_to,
            vec![SkillKind::Opportunity]
        );
    }

    /// A logging regression picks logging-in-hot-path first, and not the opportunity-only skills.
    #[test]
    fn logging_regression_matches_logging_skill() {
        let set = repo_skills();
        let input = MatchInput {
            kind: SkillKind::Regression,
            functions: vec!["demo::checksum".into(), "core::fmt::write".into()],
            code_lines: vec!["        println!(\"step {i}: {acc}\");".into()],
            languages: vec!["rust".into()],
        };
        let matches = set.matching(&input);
        assert_eq!(matches[0].skill.name, "logging-in-hot-path");
        assert!(matches[0].score >= 5, "score {}", matches[0].score);
        assert!(matches.iter().any(|m| m.skill.name == "triage-regression"));
        assert!(
            !matches
                .iter()
                .any(|m| m.skill.name == "memoize-pure-function")
        );
        assert!(
            !matches
                .iter()
                .any(|m| m.skill.name == "regex-built-per-call")
        );
    }

    /// Language and diff-sign conditions exclude a skill that does not fit.
    #[test]
    fn conditions_exclude() {
        let text = "---\nname: x\ndescription: d\napplies_to: regression\nsigns: 'Regex::new'\n\
                    diff_signs: ['Regex::new']\nlanguages: [rust]\nrecipe: hoist-regex\n---\nbody\n";
        let skill = Skill::parse(text, Path::new("/tmp/x")).unwrap();
        let set = SkillSet::from_skills(vec![skill]);
        let mut input = MatchInput {
            kind: SkillKind::Regression,
            functions: vec!["regex::Regex::new".into()],
            code_lines: vec!["let re = Regex::new(p).unwrap();".into()],
            languages: vec!["rust".into()],
        };
        assert_eq!(set.matching(&input)[0].score, 6);
        input.languages = vec!["go".into()];
        assert!(set.matching(&input).is_empty());
        input.languages = vec!["rust".into()];
        input.code_lines = vec!["let x = 1;".into()];
        assert!(set.matching(&input).is_empty());
        input.kind = SkillKind::Opportunity;
        input.code_lines = vec!["let re = Regex::new(p).unwrap();".into()];
        assert!(set.matching(&input).is_empty());
    }

    /// Broken front matter is an error naming the problem, not a panic.
    #[test]
    fn bad_front_matter() {
        assert!(matches!(
            Skill::parse("no front matter", Path::new("/x")),
            Err(SkillsError::NoFrontMatter { .. })
        ));
        assert!(matches!(
            Skill::parse("---\nname: x\n---\n", Path::new("/x")),
            Err(SkillsError::Yaml { .. })
        ));
        assert!(matches!(
            Skill::parse(
                "---\nname: x\ndescription: d\nsigns: '('\n---\n",
                Path::new("/x")
            ),
            Err(SkillsError::Pattern { .. })
        ));
        let rw = Skill::parse(
            "---\nname: x\ndescription: d\nrecipe:\n  rewrite:\n    - find: a\n      replace: b\n---\n",
            Path::new("/x"),
        )
        .unwrap();
        assert!(
            matches!(rw.recipe, Some(RecipeSpec::Rewrite { ref rewrite }) if rewrite.len() == 1)
        );
    }
}
