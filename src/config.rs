//! Daemon settings: compiled-in defaults, then an optional TOML file (`--config`), then
//! `CTP__SECTION__KEY` environment overrides, then command-line flags.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::trainer::EngineConfig;
use crate::webhooks::Webhook;

/// All daemon settings. Every field has a default, so `ctpd` starts with no file at all.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// gRPC listen address.
    pub listen: String,
    /// Folder for the embedded database, task data, checkpoints.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; empty = SQLite inside `data_dir`.
    pub database_url: String,
    /// Prometheus `/metrics` listen address; empty disables it.
    pub metrics_listen: String,
    /// Dashboard (web UI + JSON API) listen address; empty disables it. It may equal
    /// `metrics_listen`: then one listener serves both.
    pub http_listen: String,
    pub engine: EngineConfig,
    pub limits: Limits,
    pub training: TrainingDefaults,
    pub auth: Auth,
    pub tls: Option<Tls>,
    /// Where task bundles and checkpoints live: unset `url` = the data dir itself
    /// (`file://<data dir>`); `s3://bucket/prefix` = S3-compatible storage shared by daemons
    /// on several hosts (`endpoint`, `region`, `path_style`, `credentials_file`,
    /// `cache_max_bytes`, `allow_urls`; credentials also from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`).
    pub storage: ctp_storage::StorageConfig,
    /// Worker identity in the job table (default: host name and gRPC port). Stable across
    /// restarts, so a restarted daemon reclaims its previous jobs at once; unique per
    /// live daemon.
    pub worker_id: String,
    /// Job lease; a running job whose heartbeat is older than this is presumed dead.
    pub lease_seconds: u64,
    /// How often every daemon requeues jobs whose lease expired; 0 = half the lease.
    pub reap_seconds: u64,
    /// Seconds between heartbeats on idle WatchTask streams.
    pub heartbeat_seconds: u64,
    /// How long graceful shutdown waits for the running task to checkpoint.
    pub shutdown_grace_seconds: u64,
    /// Run the dispatcher (train queued tasks). `false` makes an accept-and-store-only node:
    /// tasks queue in the database for other daemons (or a later start) to train.
    pub dispatch: bool,
    /// `[[webhooks]]`: signed POSTs of events to these URLs (docs/webhooks.md). Daemons that
    /// share a database should configure the same list.
    pub webhooks: Vec<Webhook>,
    /// `[scheduler]`: priority aging and preemption (docs/operations.md, "Priorities").
    pub scheduler: Scheduler,
}

/// How the dispatcher shares engines between priorities.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Scheduler {
    /// Waiting this many seconds raises a queued task one priority level, up to high, so a
    /// steady stream of high work delays low work by at most twice this (0: no aging, and low
    /// work may wait forever behind high work).
    pub aging_seconds: u64,
    /// A task that was preempted runs at least this long after it resumes before it can be
    /// preempted again.
    pub min_run_seconds: u64,
    /// How often a running task checks whether higher-priority work waits for its engine.
    pub preempt_check_seconds: u64,
    /// `false`: priorities only order the queue; nothing is preempted.
    pub preemption: bool,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler {
            aging_seconds: 3600,
            min_run_seconds: 60,
            preempt_check_seconds: 2,
            preemption: true,
        }
    }
}

/// Limits on what one caller (token) may use; each unset = unlimited.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Quota {
    /// Tasks QUEUED or RUNNING at once.
    pub max_queued_tasks: Option<u64>,
    /// Bytes of stored task bundles, over all its tasks (data dir or bucket).
    pub max_stored_bytes: Option<u64>,
    /// Training seconds (the engine's step time) in any 24 hours.
    pub max_training_seconds_per_day: Option<f64>,
}

/// Input limits; violations are INVALID_ARGUMENT naming the sample.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_image_bytes: usize,
    pub max_image_side: u32,
    pub max_caption_bytes: usize,
    pub max_samples_per_task: usize,
    /// gRPC message size limit (each SubmitTask chunk must fit).
    pub max_message_bytes: usize,
    /// Most optimizer steps one task may take (epochs × batches per epoch), so that no
    /// single submission can block a model's queue for years.
    pub max_steps_per_task: u64,
    /// Largest WebDataset shard a task submitted by reference may name (each shard is
    /// fetched to the data dir's cache folder, stopped as soon as it crosses this).
    pub max_shard_bytes: u64,
}

/// Most rows a momentum feature queue may have (`training.queue_size`, and each task's
/// `TrainSettings.queue_size`).
pub const MAX_QUEUE_SIZE: u32 = 1 << 20;

/// The default momentum queue, in batches: `training.queue_size` unset gives each task
/// `QUEUE_BATCHES × batch_size` rows.
pub const QUEUE_BATCHES: i64 = 8;

/// Largest loss weight (`training.tp_weight`, and each of a task's `loss_weights`).
pub const MAX_LOSS_WEIGHT: f64 = 1e4;

/// Server-side defaults for training settings a submission leaves unset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingDefaults {
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    /// Momentum sync threshold on the drift ‖θ − θc‖₂ / ‖θc‖₂ when a task leaves it unset.
    /// EmojiCL measured 0.05 (docs/decisions.md); 0 syncs every step, as the paper's code.
    pub drift_threshold: f64,
    pub drift_check_every: u32,
    /// Rows of the momentum feature queue. Unset: `QUEUE_BATCHES` × the task's batch size
    /// (EmojiCL, docs/decisions.md); the paper's code uses 1,024 whatever the batch.
    pub queue_size: Option<i64>,
    /// Weight of both topology-preservation terms (`tp_cross`, `tp_intra`) when a task leaves
    /// them unset. EmojiCL measured 10 (docs/decisions.md); the paper's code uses 1.
    pub tp_weight: f64,
    /// The same for a task that replays earlier tasks: replay already holds the old tasks, and
    /// EmojiCL measured that weight 10 then mostly stops the new task from being learned
    /// (docs/decisions.md), so the default is the paper's 1.
    pub tp_weight_replay: f64,
    /// Mid-task resume checkpoint cadence (steps).
    pub checkpoint_every: i64,
}

/// Bearer tokens. Empty = no authentication.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    pub tokens: Vec<Token>,
    /// Without tokens every caller is one anonymous caller: these are its quotas.
    pub anonymous_quota: Quota,
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Who this token belongs to (recorded in audit history; the token itself is never logged).
    pub name: String,
    pub token: String,
    /// Any of "read", "submit", "admin" (admin implies submit implies read).
    pub scopes: Vec<String>,
    /// What this token (team) may use: `quota = { max_queued_tasks = 5, ... }`.
    #[serde(default)]
    pub quota: Quota,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("quota", &self.quota)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM server certificate (chain).
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM CA certificate(s): when set, clients must present a certificate signed by it
    /// (mutual TLS); connections without one are refused in the handshake.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:50051".into(),
            data_dir: PathBuf::from("ctp-data"),
            database_url: String::new(),
            metrics_listen: String::new(),
            http_listen: String::new(),
            engine: EngineConfig::default(),
            limits: Limits::default(),
            training: TrainingDefaults::default(),
            auth: Auth::default(),
            tls: None,
            storage: ctp_storage::StorageConfig::default(),
            worker_id: String::new(),
            lease_seconds: 60,
            reap_seconds: 0,
            heartbeat_seconds: 10,
            shutdown_grace_seconds: 60,
            dispatch: true,
            webhooks: Vec::new(),
            scheduler: Scheduler::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_image_bytes: 8 << 20,
            max_image_side: 4096,
            max_caption_bytes: 1024,
            max_samples_per_task: 200_000,
            max_message_bytes: 32 << 20,
            max_steps_per_task: 1_000_000,
            max_shard_bytes: 4 << 30,
        }
    }
}

impl Default for TrainingDefaults {
    fn default() -> Self {
        TrainingDefaults {
            epochs: 5,
            batch_size: 32,
            learning_rate: 1e-4,
            drift_threshold: 0.05,
            drift_check_every: 1,
            queue_size: None,
            tp_weight: 10.0,
            tp_weight_replay: 1.0,
            checkpoint_every: 20,
        }
    }
}

/// Command-line overrides (the highest-priority layer).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub device: Option<String>,
    pub metrics_listen: Option<String>,
    pub http_listen: Option<String>,
}

impl Settings {
    /// Defaults ← file ← environment (`CTP__A__B=value`, parsed as TOML values) ← flags.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<Settings, String> {
        let mut doc = toml::Value::try_from(Settings::default()).map_err(|e| e.to_string())?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
            let file_doc: toml::Value = text
                .parse::<toml::Table>()
                .map(toml::Value::Table)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            merge(&mut doc, file_doc);
        }
        for (key, value) in env {
            let Some(rest) = key.strip_prefix("CTP__") else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            let parsed = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value.clone()));
            set_path(&mut doc, &path, parsed).map_err(|e| format!("{key}: {e}"))?;
        }
        let mut s: Settings = doc
            .try_into()
            .map_err(|e: toml::de::Error| format!("invalid settings: {e}"))?;
        if let Some(v) = &flags.listen {
            s.listen = v.clone();
        }
        if let Some(v) = &flags.data_dir {
            s.data_dir = v.clone();
        }
        if let Some(v) = &flags.database_url {
            s.database_url = v.clone();
        }
        if let Some(v) = &flags.device {
            s.engine.device = v.clone();
        }
        if let Some(v) = &flags.metrics_listen {
            s.metrics_listen = v.clone();
        }
        if let Some(v) = &flags.http_listen {
            s.http_listen = v.clone();
        }
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.lease_seconds == 0 {
            return Err("lease_seconds must be at least 1".into());
        }
        let max_queue = i64::from(MAX_QUEUE_SIZE);
        if let Some(q) = self
            .training
            .queue_size
            .filter(|q| !(1..=max_queue).contains(q))
        {
            return Err(format!(
                "training.queue_size must be in 1..={max_queue} (got {q})"
            ));
        }
        for (key, w) in [
            ("tp_weight", self.training.tp_weight),
            ("tp_weight_replay", self.training.tp_weight_replay),
        ] {
            if !(0.0..=MAX_LOSS_WEIGHT).contains(&w) {
                return Err(format!(
                    "training.{key} must be in [0, {MAX_LOSS_WEIGHT}] (got {w})"
                ));
            }
        }
        self.listen
            .parse::<SocketAddr>()
            .map_err(|e| format!("listen {:?}: {e}", self.listen))?;
        if !self.metrics_listen.is_empty() {
            self.metrics_listen
                .parse::<SocketAddr>()
                .map_err(|e| format!("metrics_listen {:?}: {e}", self.metrics_listen))?;
        }
        if !self.http_listen.is_empty() {
            self.http_listen
                .parse::<SocketAddr>()
                .map_err(|e| format!("http_listen {:?}: {e}", self.http_listen))?;
        }
        for t in &self.auth.tokens {
            if t.token.len() < 16 {
                return Err(format!(
                    "auth token {:?} is shorter than 16 characters",
                    t.name
                ));
            }
            if let Some(bad) = t
                .scopes
                .iter()
                .find(|s| !["read", "submit", "admin"].contains(&s.as_str()))
            {
                return Err(format!(
                    "auth token {:?}: unknown scope {bad:?} (read, submit, admin)",
                    t.name
                ));
            }
        }
        for (who, q) in self
            .auth
            .tokens
            .iter()
            .map(|t| (format!("auth token {:?}", t.name), &t.quota))
            .chain([(
                "auth.anonymous_quota".to_string(),
                &self.auth.anonymous_quota,
            )])
        {
            if let Some(s) = q
                .max_training_seconds_per_day
                .filter(|s| s.is_nan() || *s < 0.0)
            {
                return Err(format!(
                    "{who}: quota.max_training_seconds_per_day must be >= 0 (got {s})"
                ));
            }
        }
        if self.scheduler.preempt_check_seconds == 0 {
            return Err("scheduler.preempt_check_seconds must be at least 1".into());
        }
        crate::webhooks::validate(&self.webhooks)
    }

    /// Whether `/metrics` is served by the dashboard's listener (same address).
    pub fn metrics_shares_http(&self) -> bool {
        !self.http_listen.is_empty() && self.http_listen == self.metrics_listen
    }

    /// The database URL to use: explicit, else SQLite inside the data dir.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("ctp.sqlite").display()
            )
        } else {
            self.database_url.clone()
        }
    }
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn set_path(doc: &mut toml::Value, path: &[String], value: toml::Value) -> Result<(), String> {
    let mut cur = doc;
    for (i, key) in path.iter().enumerate() {
        let table = cur
            .as_table_mut()
            .ok_or_else(|| format!("{} is not a section", path[..i].join(".")))?;
        if i + 1 == path.len() {
            let value = match (table.get(key), value) {
                // Keep strings strings even when they look like numbers ("8080" stays text).
                (Some(toml::Value::String(_)), v) if !v.is_str() => {
                    toml::Value::String(v.to_string())
                }
                (_, v) => v,
            };
            table.insert(key.clone(), value);
            return Ok(());
        }
        cur = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn engine_levers_are_settings_off_by_default() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let s = Settings::load(
            None,
            env(&[("CTP__ENGINE__CHANNELS_LAST", "true")]),
            &Default::default(),
        )
        .unwrap();
        assert!(s.engine.channels_last && !s.engine.bf16_weight_cache);
        assert_eq!(s.engine.precision, "auto");
        let s = Settings::load(
            None,
            env(&[
                ("CTP__ENGINE__BF16_WEIGHT_CACHE", "true"),
                ("CTP__ENGINE__CHANNELS_LAST", "false"),
            ]),
            &Default::default(),
        )
        .unwrap();
        assert!(!s.engine.channels_last && s.engine.bf16_weight_cache);
        let err = Settings::load(
            None,
            env(&[("CTP__ENGINE__CHANNELS_LAST", "yes")]),
            &Default::default(),
        )
        .unwrap_err();
        assert!(err.contains("channels_last"), "{err}");
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "listen = \"0.0.0.0:6000\"\n[training]\nepochs = 3\n[engine]\ndevice = \"cpu\"\n",
        )
        .unwrap();
        let env = vec![
            ("CTP__TRAINING__BATCH_SIZE".to_string(), "16".to_string()),
            ("CTP__ENGINE__DEVICE".to_string(), "cuda:1".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let flags = Overrides {
            data_dir: Some("/tmp/d".into()),
            ..Default::default()
        };
        let s = Settings::load(Some(&f), env, &flags).unwrap();
        assert_eq!(s.listen, "0.0.0.0:6000");
        assert_eq!(s.training.epochs, 3);
        assert_eq!(s.training.batch_size, 16);
        assert_eq!(s.engine.device, "cuda:1");
        assert_eq!(s.data_dir, PathBuf::from("/tmp/d"));
        assert!(s.database_url().starts_with("sqlite:///tmp/d/ctp.sqlite"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "lisen = \"x\"\n").unwrap();
        let e = Settings::load(Some(&f), vec![], &Overrides::default()).unwrap_err();
        assert!(e.contains("lisen"), "{e}");
        let e = Settings::load(
            None,
            vec![("CTP__LISTEN".into(), "nope".into())],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.contains("listen"), "{e}");
        let tok = vec![(
            "CTP__AUTH__TOKENS".into(),
            "[{name=\"a\", token=\"short\", scopes=[\"read\"]}]".into(),
        )];
        assert!(Settings::load(None, tok, &Overrides::default())
            .unwrap_err()
            .contains("shorter"));
        let bad = [
            (
                "QUEUE_SIZE",
                "0",
                "training.queue_size must be in 1..=1048576",
            ),
            (
                "QUEUE_SIZE",
                "2000000",
                "training.queue_size must be in 1..=1048576",
            ),
            (
                "TP_WEIGHT",
                "-1.0",
                "training.tp_weight must be in [0, 10000]",
            ),
            (
                "TP_WEIGHT",
                "1e5",
                "training.tp_weight must be in [0, 10000]",
            ),
            (
                "TP_WEIGHT",
                "nan",
                "training.tp_weight must be in [0, 10000]",
            ),
            (
                "TP_WEIGHT_REPLAY",
                "-0.5",
                "training.tp_weight_replay must be in [0, 10000]",
            ),
        ];
        for (key, value, message) in bad {
            let e = Settings::load(
                None,
                vec![(format!("CTP__TRAINING__{key}"), value.into())],
                &Overrides::default(),
            )
            .unwrap_err();
            assert!(e.contains(message), "{key}={value}: {e}");
        }
        let s = Settings::load(
            None,
            vec![("CTP__TRAINING__QUEUE_SIZE".into(), "512".into())],
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.training.queue_size, Some(512));
    }

    #[test]
    fn tokens_are_redacted_in_debug_output() {
        let t = Token {
            name: "ci".into(),
            token: "supersecretvalue123".into(),
            scopes: vec!["read".into()],
            quota: Quota::default(),
        };
        assert!(!format!("{t:?}").contains("supersecret"));
    }
}
