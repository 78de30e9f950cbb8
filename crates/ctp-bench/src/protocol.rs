//! The EmojiCL protocol's plain types: a method (a row of the table), the protocol every cell
//! of a table shares, and one method's result. A leaf module: it imports none of its siblings.
use ctp_api::pb;
use serde::{Deserialize, Serialize};

/// One benchmark configuration (a row of the table).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Method {
    /// Row name, e.g. `CTP`, `SeqFT+replay`, `CTP gated 0.02`.
    pub name: String,
    /// `ctp` or `seqft`.
    pub method: String,
    /// `frozen` or `train`.
    pub bn: String,
    pub threshold: f64,
    pub joint: bool,
    /// Topology-preservation weight (both terms); 1 = the paper's code.
    pub tp_weight: f64,
    /// MLM and MLM-distillation weight; 1 = the paper's code.
    pub mlm_weight: f64,
    /// Weight of the momentum terms (queue ITC and MLM distillation, times `mlm_weight` for the
    /// latter); 1 = the paper's code.
    pub momentum_weight: f64,
    /// Replayed samples of each earlier lineage task per batch (0 = no replay).
    #[serde(default)]
    pub replay_per_task: u32,
    /// Replayed samples as a fraction of the batch (0 = no replay).
    #[serde(default)]
    pub replay_fraction: f64,
    /// Steps between drift checks for this row (`None` = the protocol's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_every: Option<u32>,
    /// Fidelity variant: the paper-era task-0 objective (no queue contrast, no MLM
    /// distillation on the first task).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub task0_plain: bool,
    /// Fidelity variant: the task-0 momentum coefficient scaled to the task's length
    /// (`TrainSettings.momentum_reference_steps`; `None` = fixed, the paper).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum_reference_steps: Option<u32>,
    /// Fidelity variant: the momentum queue's rows (`TrainSettings.queue_size`; `None` = the
    /// paper's 1,024, `PAPER_QUEUE_SIZE`, sent explicitly so that the daemon's measured
    /// default of 8 batches does not change what a committed cell means).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<i64>,
}

/// The momentum queue of the paper's code (and of every EmojiCL cell without a `queue_size`).
pub const PAPER_QUEUE_SIZE: i64 = 1024;

impl Method {
    pub(crate) fn pb_method(&self) -> pb::Method {
        if self.method == "seqft" {
            pb::Method::Seqft
        } else {
            pb::Method::Ctp
        }
    }
    pub(crate) fn pb_bn(&self) -> pb::BnPolicy {
        if self.bn == "train" {
            pb::BnPolicy::Train
        } else {
            pb::BnPolicy::Frozen
        }
    }
    /// File-name-safe form of the name.
    pub fn slug(&self) -> String {
        self.name
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "-")
    }
}

/// The knobs shared by every cell of one table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Protocol {
    pub preset: String,
    /// Cap on training samples per task (`None` = every emoji of the category).
    pub max_train: Option<usize>,
    /// Cap on evaluation samples per task (`None` = every base emoji of the category).
    pub max_eval: Option<usize>,
    pub epochs: u32,
    pub batch: u32,
    pub lr: f64,
    pub tasks: Vec<usize>,
    pub check_every: u32,
    /// Base emoji per category held out of every task as the anchor suite (issue #25 §2;
    /// 0 = none, the split of every cell written before it existed, which omit the key).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub anchor_per_category: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A cell's results on the EmojiCL anchor suite (held-out emoji of every category).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AnchorTrack {
    /// The suite's name on the daemon.
    pub suite: String,
    /// Samples in the suite.
    pub samples: u64,
    /// Rm on the suite of each version, in lineage order (after task 1, 2, …; Joint: one).
    pub rm: Vec<Option<f64>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodResult {
    pub tasks: Vec<String>,
    /// matrix[v][j]: Rm on task j after training through task v (None = not seen yet).
    pub matrix: Vec<Vec<Option<f64>>>,
    pub final_rm: Vec<f64>,
    pub final_mean_rm: f64,
    pub average_forgetting: Option<f64>,
    pub bwt: Option<f64>,
    pub momentum_syncs: u64,
    pub momentum_steps: u64,
    /// Optimizer steps of each submitted task (Joint: one task).
    pub steps_per_task: Vec<u64>,
    /// Training samples of each submitted task.
    pub n_train: Vec<u64>,
    /// Seconds spent training and evaluating, summed over the runs that made the cell (up to
    /// each interrupted run's last finished task).
    pub wall_seconds: f64,
    /// Processes that worked on the cell (1 = it ran uninterrupted; more = resumed).
    #[serde(default = "one")]
    pub runs: u32,
    /// Results on the anchor suite (`Protocol::anchor_per_category` > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<AnchorTrack>,
}

fn one() -> u32 {
    1
}
