//! A debuginfod client: fetches debug files the store lacks by build-id
//! (`GET <url>/buildid/<id>/debuginfo`, then `/executable`), stores them in the symbol store
//! (which is the on-disk cache), and remembers misses for a while (negative cache) so a
//! build-id no server has is not asked for on every pass.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::SymbolsError;
use super::store::{AddOutcome, StoredFile, SymbolStore, inspect};

/// How long a build-id no server had is not asked for again. Default 10 minutes.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(600);

/// debuginfod servers to ask, in order.
#[derive(Debug, Clone)]
pub struct Debuginfod {
    urls: Vec<String>,
    http: reqwest::Client,
    negative_ttl: Duration,
}

impl Debuginfod {
    /// A client for `urls` (trailing `/` ignored); `None` when the list is empty.
    pub fn new(urls: &[String], negative_ttl: Duration) -> Option<Self> {
        let urls: Vec<String> = urls
            .iter()
            .flat_map(|u| u.split_whitespace())
            .map(|u| u.trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return None;
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .ok()?;
        Some(Self {
            urls,
            http,
            negative_ttl,
        })
    }

    fn negative_path(store: &SymbolStore, build_id: &str) -> PathBuf {
        store.dir().join(".debuginfod-misses").join(build_id)
    }

    /// Fetches `build_id` into `store` if a server has it; `None` when none has (remembered for
    /// the negative-cache time) or the answer is not a usable ELF file. Network errors are
    /// logged and count as a miss for this pass only.
    pub async fn fetch(
        &self,
        store: &SymbolStore,
        build_id: &str,
    ) -> Result<Option<StoredFile>, SymbolsError> {
        if !build_id.bytes().all(|b| b.is_ascii_hexdigit()) || build_id.len() < 2 {
            return Ok(None);
        }
        let negative = Self::negative_path(store, build_id);
        if let Ok(meta) = std::fs::metadata(&negative)
            && let Ok(at) = meta.modified()
            && SystemTime::now()
                .duration_since(at)
                .is_ok_and(|age| age < self.negative_ttl)
        {
            return Ok(None);
        }
        let mut all_answered = true;
        for url in &self.urls {
            for kind in ["debuginfo", "executable"] {
                let target = format!("{url}/buildid/{build_id}/{kind}");
                let response = match self.http.get(&target).send().await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(url = %target, error = %e, "debuginfod unreachable");
                        all_answered = false;
                        break;
                    }
                };
                if !response.status().is_success() {
                    tracing::debug!(url = %target, status = %response.status(), "debuginfod miss");
                    continue;
                }
                let body = match response.bytes().await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(url = %target, error = %e, "debuginfod download failed");
                        all_answered = false;
                        continue;
                    }
                };
                let info = match inspect(&body, &target) {
                    Ok(i) if i.build_id == build_id.to_ascii_lowercase() => i,
                    Ok(i) => {
                        tracing::warn!(url = %target, got = %i.build_id, "debuginfod answered another build-id");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(url = %target, error = %e, "debuginfod answered a bad file");
                        continue;
                    }
                };
                let outcome = store.add(&info, &body, &format!("debuginfod:{target}"))?;
                tracing::info!(build_id, url = %target, quality = info.quality.name(), ?outcome, "fetched from debuginfod");
                if matches!(outcome, AddOutcome::Added | AddOutcome::Upgraded(_))
                    || matches!(outcome, AddOutcome::KeptExisting(_))
                {
                    return store.get(build_id);
                }
            }
        }
        if all_answered {
            if let Some(dir) = negative.parent() {
                std::fs::create_dir_all(dir).map_err(SymbolsError::io(dir))?;
            }
            std::fs::write(&negative, b"").map_err(SymbolsError::io(&negative))?;
        }
        Ok(None)
    }
}
