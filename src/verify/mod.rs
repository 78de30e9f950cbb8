//! `ctpd verify` (issue #24 §2): is this data dir sound? One check of the database and the
//! files (or bucket objects) its rows reference, the way `pg_amcheck` or a filesystem's fsck
//! checks theirs:
//!
//! - every version's checkpoint exists, matches its sha256 and loads;
//! - every task's bundle exists, matches the hash its name carries, decodes, and holds the
//!   sample counts of its row;
//! - version chains (parents exist and come first), heads (an accepted version of the
//!   model), evaluations (one per task of the version's lineage), resume points (exist);
//! - files and objects that no row references, and temp files, are listed.
//!
//! The running daemon does the same check read-only for the `Verify` RPC (`ctpctl verify`).
//! `--repair` only quarantines (moves unreferenced and temp files to
//! `<data dir>/quarantine/<time>/…`, unreferenced objects to `quarantine/<key>`); it never
//! deletes and never changes a row.
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde::Serialize;

use crate::datadir::DataDir;
use crate::objects::Objects;
use crate::store::{Store, StoreError, TaskRow, VersionRow};
use crate::task::TaskSettings;
use crate::trainer::{ModelConfig, Preset, TrainerHandle, VersionRef};

mod files;

/// What to check, and with what.
pub struct Verifier<'a> {
    pub store: &'a Store,
    pub objects: &'a Objects,
    pub data: &'a DataDir,
    /// Loads each version's weights (`None`: hashes only).
    pub engine: Option<&'a TrainerHandle>,
}

/// The outcome: counts of what was checked, and every problem by name.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub models: usize,
    pub versions: usize,
    pub tasks: usize,
    pub resume_points: usize,
    /// Each names the thing and what is wrong with it.
    pub problems: Vec<String>,
    /// Files (data dir paths) or objects (bucket keys) that no row references.
    pub unreferenced: Vec<String>,
    /// Temp files (`.name.tmp`) in the data dir.
    pub temp_files: Vec<String>,
    /// Where `--repair` moved things.
    pub quarantined: Vec<String>,
}

impl Report {
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }

    /// A few lines for a terminal.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "checked {} models, {} versions, {} tasks, {} resume points: {}\n",
            self.models,
            self.versions,
            self.tasks,
            self.resume_points,
            if self.is_sound() {
                "sound".to_string()
            } else {
                format!("{} problems", self.problems.len())
            }
        );
        for p in &self.problems {
            s.push_str(&format!("problem: {p}\n"));
        }
        for u in &self.unreferenced {
            s.push_str(&format!("unreferenced: {u}\n"));
        }
        for t in &self.temp_files {
            s.push_str(&format!("temp file: {t}\n"));
        }
        for q in &self.quarantined {
            s.push_str(&format!("quarantined: {q}\n"));
        }
        s
    }
}

/// Every version of `model`, oldest first.
async fn all_versions(store: &Store, model: &str) -> Result<Vec<VersionRow>, StoreError> {
    let (mut out, mut token) = (Vec::new(), None);
    loop {
        let (rows, next) = store.list_versions(model, 500, token.as_deref()).await?;
        out.extend(rows);
        match next {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
}

async fn all_tasks(store: &Store) -> Result<Vec<TaskRow>, StoreError> {
    let (mut out, mut token) = (Vec::new(), None);
    loop {
        let (rows, next) = store.list_tasks(None, None, 500, token.as_deref()).await?;
        out.extend(rows);
        match next {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
}

impl Verifier<'_> {
    /// Checks everything; with `repair`, quarantines what no row references.
    ///
    /// # Errors
    /// Only if the database cannot be read; every problem of a file or row is in the report.
    pub async fn run(&self, repair: bool) -> Result<Report, StoreError> {
        let mut r = Report::default();
        let listing = self.listing().await;
        let tasks = all_tasks(self.store).await?;
        let by_id: BTreeMap<&str, &TaskRow> = tasks.iter().map(|t| (t.id.as_str(), t)).collect();
        for m in self.store.list_models().await? {
            r.models += 1;
            let versions = all_versions(self.store, &m.name).await?;
            let numbers: HashSet<i64> = versions.iter().map(|v| v.version).collect();
            if let Some(h) = m.head_version {
                match versions.iter().find(|v| v.version == h) {
                    None => r
                        .problems
                        .push(format!("model {}: head {h} does not exist", m.name)),
                    Some(v) if v.rejected_reason.is_some() => r.problems.push(format!(
                        "model {}: head {h} is a version the gate rejected",
                        m.name
                    )),
                    Some(_) => {}
                }
            }
            for v in &versions {
                r.versions += 1;
                self.version(&m.preset, v, &numbers, &by_id, &mut r).await?;
            }
        }
        for t in &tasks {
            r.tasks += 1;
            self.bundle(t, &mut r).await;
        }
        let referenced = self.store.referenced_files().await?;
        self.files(listing, &referenced, repair, &mut r).await?;
        Ok(r)
    }

    async fn version(
        &self,
        preset: &str,
        v: &VersionRow,
        numbers: &HashSet<i64>,
        tasks: &BTreeMap<&str, &TaskRow>,
        r: &mut Report,
    ) -> Result<(), StoreError> {
        let name = format!("version {}/{}", v.model, v.version);
        if let Some(p) = v.parent {
            if !numbers.contains(&p) || p >= v.version {
                r.problems
                    .push(format!("{name}: parent {p} does not exist before it"));
            }
        }
        let lineage = self.store.lineage(&v.model, v.version).await?;
        let evals = v.task_evals().count();
        if evals != lineage.len() {
            r.problems.push(format!(
                "{name}: {evals} evaluations for a lineage of {} tasks",
                lineage.len()
            ));
        }
        if !tasks.contains_key(v.task_id.as_str()) {
            r.problems
                .push(format!("{name}: its task {} does not exist", v.task_id));
        }
        let file = match self.checkpoint(v).await {
            Ok(f) => f,
            Err(p) => {
                r.problems.push(format!("{name}: {p}"));
                return Ok(());
            }
        };
        if let Some(engine) = self.engine {
            let cfg = tasks
                .get(v.task_id.as_str())
                .and_then(|t| serde_json::from_str::<TaskSettings>(&t.settings_json).ok())
                .map(|s| s.model_config())
                .or_else(|| Preset::parse(preset).map(ModelConfig::preset));
            let loaded = match cfg {
                Some(cfg) => engine
                    .verify(
                        cfg,
                        VersionRef {
                            path: file,
                            sha256: v.sha256.clone(),
                        },
                    )
                    .await
                    .map_err(|e| e.to_string()),
                None => Err(format!("unknown preset {preset:?}")),
            };
            if let Err(e) = loaded {
                r.problems
                    .push(format!("{name}: the checkpoint does not load: {e}"));
            }
        }
        Ok(())
    }

    /// The version's checkpoint as a local file whose sha256 matches its row.
    async fn checkpoint(&self, v: &VersionRow) -> Result<PathBuf, String> {
        let path = &v.checkpoint_path;
        match self.objects.exists(path).await {
            Ok(true) => {}
            Ok(false) => return Err(format!("checkpoint {path} is missing")),
            Err(e) => return Err(format!("checkpoint {path}: {e}")),
        }
        let file = self
            .objects
            .local(path, &v.sha256)
            .await
            .map_err(|e| format!("checkpoint {path}: {e}"))?;
        let found = crate::trainer::checkpoint::sha256_file(&file).map_err(|e| e.to_string())?;
        if found != v.sha256 {
            return Err(format!(
                "checkpoint {path} has sha256 {found}, its row records {}",
                v.sha256
            ));
        }
        Ok(file)
    }

    async fn bundle(&self, t: &TaskRow, r: &mut Report) {
        let name = format!("task {} ({}/{})", t.id, t.model, t.name);
        let stored = &t.data_dir;
        if !self.objects.exists(stored).await.unwrap_or(false) {
            r.problems
                .push(format!("{name}: bundle {stored} is missing"));
            return;
        }
        let sha = crate::taskdata::bundle_sha(stored).unwrap_or_default();
        let read = match self.objects.local(stored, &sha).await {
            Ok(p) => tokio::task::spawn_blocking(move || crate::taskdata::read_bundle(&p))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string())),
            Err(e) => Err(e.to_string()),
        };
        match read {
            Err(e) => r
                .problems
                .push(format!("{name}: bundle {stored} does not decode: {e}")),
            Ok(samples) => {
                let eval = samples.iter().filter(|s| s.eval).count() as i64;
                let train = samples.len() as i64 - eval;
                if (train, eval) != (t.n_train, t.n_eval) {
                    r.problems.push(format!(
                        "{name}: bundle {stored} holds {train} train / {eval} eval samples, \
                         its row says {} / {}",
                        t.n_train, t.n_eval
                    ));
                }
            }
        }
    }
}
