//! Opportunity skills as the UI needs them: name, description and the profile signs (regexes
//! over function names) from the YAML front matter of `<skills>/<name>/SKILL.md`, the format the
//! agent loads.

use std::path::Path;

use serde::Deserialize;

/// One opportunity skill.
#[derive(Debug, Clone)]
pub(crate) struct Skill {
    pub(crate) name: String,
    pub(crate) description: String,
    signs: Vec<regex::Regex>,
}

impl Skill {
    /// Whether `function` or one of `callees` shows the skill's profile signs.
    pub(crate) fn matches<'a>(
        &self,
        function: &str,
        callees: impl IntoIterator<Item = &'a str> + Clone,
    ) -> bool {
        self.signs
            .iter()
            .any(|re| re.is_match(function) || callees.clone().into_iter().any(|c| re.is_match(c)))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
struct FrontMatter {
    name: String,
    #[serde(default)]
    description: String,
    applies_to: Option<OneOrMany>,
    signs: Option<OneOrMany>,
}

/// The opportunity skills under `dir` (skills whose `applies_to` includes `opportunity`);
/// unreadable ones are logged and skipped.
pub(crate) fn opportunity_skills(dir: &Path) -> Vec<Skill> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::warn!(dir = %dir.display(), "skills directory unreadable");
        return Vec::new();
    };
    let mut skills = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path().join("SKILL.md");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        match parse(&text) {
            Ok(Some(s)) => skills.push(s),
            Ok(None) => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "skill skipped"),
        }
    }
    skills.sort_by(|a, b| a.name.cmp(&b.name));
    skills
}

fn parse(text: &str) -> Result<Option<Skill>, String> {
    let rest = text
        .strip_prefix("---")
        .ok_or("no YAML front matter (the file must start with ---)")?;
    let (yaml, _) = rest
        .split_once("\n---")
        .ok_or("the front matter has no closing ---")?;
    let fm: FrontMatter = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
    let applies = fm.applies_to.map(OneOrMany::into_vec).unwrap_or_default();
    if !applies.iter().any(|a| a == "opportunity") {
        return Ok(None);
    }
    let signs = fm
        .signs
        .map(OneOrMany::into_vec)
        .unwrap_or_default()
        .iter()
        .map(|s| regex::Regex::new(s).map_err(|e| format!("sign {s:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Skill {
        name: fm.name,
        description: fm.description,
        signs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opportunity skills are kept with their signs; regression-only skills are not.
    #[test]
    fn parses_front_matter() {
        let s = parse(
            "---\nname: regex\ndescription: d\napplies_to: [regression, opportunity]\nsigns: ['regex::']\n---\n# x\n",
        )
        .unwrap()
        .unwrap();
        assert!(s.matches("svc::route", ["regex::Regex::new"]));
        assert!(!s.matches("svc::route", ["alloc"]));
        assert!(
            parse("---\nname: log\napplies_to: regression\nsigns: ['fmt']\n---\n")
                .unwrap()
                .is_none()
        );
        assert!(parse("# no front matter").is_err());
    }
}
