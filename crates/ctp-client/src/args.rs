//! Command-line definitions of `ctpctl` (clap derive). Only parsing lives here, so the
//! binary stays a two-liner and the argument grammar is unit-testable.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use super::anchors::{AnchorsAddArgs, AnchorsCommand};

/// Shown under `ctpctl --help`: scripts branch on these, so they are part of the interface.
const EXIT_CODES: &str = "\
Exit codes:
  0  success (for watch/submit --wait: the task SUCCEEDED)
  1  usage or local error (bad arguments, unreadable dataset, cannot write output)
  2  the daemon rejected the request (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
     ABORTED, ALREADY_EXISTS, PERMISSION_DENIED, UNAUTHENTICATED, INTERNAL, ...)
  3  daemon unavailable / connection failed (UNAVAILABLE, DEADLINE_EXCEEDED, not serving)
  4  the watched task ended FAILED or CANCELLED
  5  the watched task SUCCEEDED but the model's promotion gate rejected its version
     (the version is kept; the head did not move)
  6  verify found problems (each is printed)

Errors from the daemon are printed as one line on stderr: `error: <CODE>: <message>`.";

/// ctpctl — control a ctpd continual-training daemon, and prepare datasets for it.
#[derive(Debug, Parser)]
#[command(name = "ctpctl", version, after_long_help = EXIT_CODES, after_help = EXIT_CODES)]
pub struct Cli {
    /// Daemon address (http://host:port, or https://… with TLS).
    #[arg(
        long,
        global = true,
        env = "CTP_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub addr: String,
    /// Bearer token, sent as `authorization: Bearer <token>`.
    #[arg(long, global = true, env = "CTP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificate to verify an https:// daemon with.
    #[arg(long, global = true, env = "CTP_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for a daemon that requires mutual TLS (with --client-key).
    #[arg(long, global = true, env = "CTP_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, global = true, env = "CTP_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Machine-readable JSON on stdout (and no progress bars).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload a dataset as a new training task (a .tar, a folder of .tar shards, or a .jsonl).
    Submit(SubmitArgs),
    /// Follow a task's progress until it ends (reconnects without losing events).
    Watch(WatchArgs),
    /// List tasks (all pages).
    Tasks(TasksArgs),
    /// Show a model's versions with their evaluation (Rm per task, forgetting, BWT).
    Versions(ModelArg),
    /// Move a model's head to another version (also promotes a gate-rejected version).
    Rollback(RollbackArgs),
    /// Show or set a model's promotion gate (the forgetting policy new versions must meet).
    Gate(GateArgs),
    /// Cancel a queued or running task.
    Cancel(TaskIdArg),
    /// Change a queued task's priority (admin scope).
    Priority(PriorityArgs),
    /// Your quotas and what you use of them.
    Quota,
    /// Have the daemon write a consistent backup (database + files) to a directory on its host.
    Backup(BackupArgs),
    /// Have the running daemon check its data dir, database and bucket (admin scope);
    /// read-only (to quarantine, stop it and run `ctpd verify --repair`).
    Verify(VerifyArgs),
    /// Embed images and/or texts with a version.
    Embed(EmbedArgs),
    /// Download a version to a folder: weights, config.json, tokenizer, model card and the
    /// probe set with the daemon's embeddings (docs/export.md), each checked by sha256.
    Export(crate::export::ExportArgs),
    /// Rank the images of a folder against a text query.
    Search(SearchArgs),
    /// Check the daemon's gRPC health service.
    Health(HealthArgs),
    /// Write an HTML report with charts of a model's continual-training history.
    Report(ReportArgs),
    /// A model's anchor suites: held-out image-caption sets every new version is evaluated on.
    Anchors {
        #[command(subcommand)]
        command: AnchorsCommand,
    },
    /// The EmojiCL benchmark (9 emoji domains).
    Emojicl {
        #[command(subcommand)]
        command: EmojiclCommand,
    },
}

/// Scheduling priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PriorityArg {
    Low,
    /// The default.
    Normal,
    /// Needs the admin scope; may preempt lower work.
    High,
}

impl PriorityArg {
    pub fn to_pb(self) -> ctp_api::pb::TaskPriority {
        match self {
            PriorityArg::Low => ctp_api::pb::TaskPriority::Low,
            PriorityArg::Normal => ctp_api::pb::TaskPriority::Normal,
            PriorityArg::High => ctp_api::pb::TaskPriority::High,
        }
    }
}

/// Training method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// CTP (compatible momentum contrast + topology preservation).
    Ctp,
    /// Sequential fine-tuning (the lower bound).
    Seqft,
}

/// BatchNorm policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BnPolicyArg {
    /// BN layers keep their running statistics.
    Frozen,
    /// BN layers train (batch statistics).
    Train,
}

/// Task states accepted by `tasks --state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Waiting to run.
    Queued,
    /// Training or evaluating.
    Running,
    /// Finished with a new version.
    Succeeded,
    /// Stopped with an error.
    Failed,
    /// Cancelled.
    Cancelled,
}

/// `submit` arguments.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Model name (created on first use).
    #[arg(long)]
    pub model: String,
    /// Model size preset for a new model: tiny | small | base.
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Task name shown in versions and reports.
    #[arg(long)]
    pub name: String,
    /// Dataset: a .tar shard, a folder of .tar shards, or a .jsonl manifest; or WebDataset
    /// shards by URL (s3://, https://, file://), which the daemon fetches itself. A URL may
    /// be a brace pattern, quoted so the shell leaves it alone: 's3://b/x/shard-{000..063}.tar'.
    pub path: PathBuf,
    /// Hold out this fraction for evaluation (default 0.2 when samples carry no split;
    /// given explicitly, it overrides the splits in the dataset; for URLs, the daemon looks
    /// at the samples' splits).
    #[arg(long)]
    pub eval_fraction: Option<f32>,
    /// Passes over the training split.
    #[arg(long)]
    pub epochs: Option<u32>,
    /// Samples per optimizer step.
    #[arg(long)]
    pub batch_size: Option<u32>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Momentum sync drift threshold (0 = sync every step, the paper; unset = the server's
    /// default, 0.05 in ctpd).
    #[arg(long)]
    pub drift_threshold: Option<f64>,
    /// Steps between drift checks.
    #[arg(long)]
    pub drift_check_every: Option<u32>,
    /// Scale the task-0 momentum coefficient so a short first task moves the momentum model
    /// as far as this many steps at 0.995 would (0 = fixed, the paper).
    #[arg(long)]
    pub momentum_reference_steps: Option<u32>,
    /// Rows of the momentum feature queue (server default: 8 × the batch size, measured on
    /// EmojiCL; the paper's code uses 1,024). A parent's queue of another size keeps its
    /// newest rows.
    #[arg(long)]
    pub queue_size: Option<u32>,
    /// Weight of both topology-preservation loss terms (server default 10, or 1 for a task
    /// with replay, both measured on EmojiCL; the paper's code uses 1).
    #[arg(long)]
    pub tp_weight: Option<f64>,
    /// Replay this many training samples of each earlier lineage task in every batch.
    #[arg(long, conflicts_with = "replay_fraction")]
    pub replay_per_task: Option<u32>,
    /// Replay earlier lineage tasks' samples as this fraction of the batch size, in (0, 1].
    #[arg(long)]
    pub replay_fraction: Option<f64>,
    /// Training method.
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    /// Scheduling priority (high needs the admin scope).
    #[arg(long, value_enum)]
    pub priority: Option<PriorityArg>,
    /// BatchNorm policy.
    #[arg(long, value_enum)]
    pub bn_policy: Option<BnPolicyArg>,
    /// Seed for data order, augmentation and the eval split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Makes the upload retry-safe: resubmitting with the same key returns the first task.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// After submitting, follow the task like `watch` (exit code reflects the outcome).
    #[arg(long)]
    pub wait: bool,
    /// Target size of one upload message in bytes.
    #[arg(long, default_value_t = 4 << 20, hide = true)]
    pub chunk_bytes: usize,
}

/// `watch` arguments.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Task id.
    pub task_id: String,
    /// Give up after this many consecutive failed reconnects.
    #[arg(long, default_value_t = 20)]
    pub max_retries: u32,
}

/// `tasks` arguments.
#[derive(Debug, Args)]
pub struct TasksArgs {
    /// Only this model's tasks.
    #[arg(long)]
    pub model: Option<String>,
    /// Only tasks in this state.
    #[arg(long, value_enum)]
    pub state: Option<StateArg>,
}

/// A `--model` argument.
#[derive(Debug, Args)]
pub struct ModelArg {
    /// Model name.
    #[arg(long)]
    pub model: String,
}

/// A task id argument.
#[derive(Debug, Args)]
pub struct TaskIdArg {
    /// Task id.
    pub task_id: String,
}

/// `priority` arguments.
#[derive(Debug, Args)]
pub struct PriorityArgs {
    /// Task id (QUEUED).
    pub task_id: String,
    /// The new priority.
    #[arg(value_enum)]
    pub priority: PriorityArg,
}

/// `gate` arguments: with no bound and no `--clear`, prints the gate.
#[derive(Debug, Args)]
pub struct GateArgs {
    /// Model name.
    #[arg(long)]
    pub model: String,
    /// Reject versions whose average forgetting (Rm points) exceeds this.
    #[arg(long)]
    pub max_avg_forgetting: Option<f64>,
    /// Reject versions whose Rm on the union of the lineage's eval sets is below this.
    #[arg(long)]
    pub min_union_rm: Option<f64>,
    /// Reject versions whose mean Rm drop from the parent, on the parent's tasks, exceeds this.
    #[arg(long)]
    pub max_rm_drop: Option<f64>,
    /// Reject versions whose mean Rm drop from the parent on an anchor suite is significantly
    /// above this: the lower bound of a 95 % paired-bootstrap interval exceeds it.
    #[arg(long)]
    pub max_anchor_drop: Option<f64>,
    /// Bootstrap resamples for --max-anchor-drop (default 1000).
    #[arg(long, requires = "max_anchor_drop")]
    pub anchor_resamples: Option<u32>,
    /// Remove the gate.
    #[arg(long, conflicts_with_all = ["max_avg_forgetting", "min_union_rm", "max_rm_drop", "max_anchor_drop"])]
    pub clear: bool,
}

/// `verify` arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also load every version's weights in the engine; waits for a running task's end.
    #[arg(long)]
    pub load_weights: bool,
}

/// `backup` arguments.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Absolute path of a new or empty directory on the DAEMON's host (needs the admin scope).
    #[arg(long)]
    pub to: String,
}

/// `rollback` arguments.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Model name.
    #[arg(long)]
    pub model: String,
    /// Version to make the head.
    #[arg(long)]
    pub to: i64,
    /// Fail (ABORTED) unless the head is currently this version.
    #[arg(long)]
    pub expected_head: Option<i64>,
    /// Why (kept in the audit history).
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// `embed` arguments.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Model name.
    #[arg(long)]
    pub model: String,
    /// Version (default: the head).
    #[arg(long)]
    pub version: Option<i64>,
    /// Image file to embed (repeatable).
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    /// Text to embed (repeatable).
    #[arg(long = "text")]
    pub texts: Vec<String>,
}

/// `search` arguments.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Model name.
    #[arg(long)]
    pub model: String,
    /// Version (default: the head).
    #[arg(long)]
    pub version: Option<i64>,
    /// Text query.
    #[arg(long)]
    pub query: String,
    /// Number of results.
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// Folder of .png/.jpg/.jpeg images.
    pub dir: PathBuf,
}

/// `health` arguments.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Service to check ("" = the whole server).
    #[arg(long, default_value = "")]
    pub service: String,
}

/// `report` arguments.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Model name.
    #[arg(long)]
    pub model: String,
    /// Output folder (created): index.html + PNG charts.
    #[arg(long)]
    pub out: PathBuf,
}

/// `emojicl` subcommands.
#[derive(Debug, Subcommand)]
pub enum EmojiclCommand {
    /// Export the benchmark tasks as datasets `DIR/<nn>-<slug>/` plus `DIR/index.json`.
    Export(EmojiclExportArgs),
}

/// Export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// One .tar shard per task.
    Webdataset,
    /// samples.jsonl + images/ per task.
    Jsonl,
}

/// `emojicl export` arguments.
#[derive(Debug, Args)]
pub struct EmojiclExportArgs {
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Dataset format of each task.
    #[arg(long, value_enum, default_value_t = FormatArg::Webdataset)]
    pub format: FormatArg,
    /// Tasks to export, comma-separated indices 0..=8 (default: all, in order).
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<usize>,
    /// Cap on training samples per task.
    #[arg(long)]
    pub max_train: Option<usize>,
    /// Cap on evaluation samples per task.
    #[arg(long)]
    pub max_eval: Option<usize>,
    /// Cap on skin-tone variants per People & Body emoji (default: all).
    #[arg(long)]
    pub max_skin_variants: Option<usize>,
    /// Training captions per image (each a different template).
    #[arg(long, default_value_t = 1)]
    pub captions_per_image: usize,
    /// Seed for subsets and caption templates.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Hold this many base emoji of every category out of all tasks and write them to
    /// `OUT/anchor/`, an anchor suite for `ctpctl anchors add` (0 = none, the classic split).
    #[arg(long, default_value_t = 0)]
    pub anchor_per_category: usize,
    /// Folder holding the npm packages (default: $CTP_ASSETS/npm/node_modules).
    #[arg(long)]
    pub node_modules: Option<PathBuf>,
}
