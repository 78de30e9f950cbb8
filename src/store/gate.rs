//! The per-model promotion gate (issue #10): stored as JSON on the model row.

use serde::{Deserialize, Serialize};

use super::db::args;
use super::rows::load_model;
use super::{Result, Store, StoreError};

/// Bounds a new version must meet to become the head; `None` = not checked.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GatePolicy {
    /// Upper bound on the version's average forgetting (Rm points).
    pub max_avg_forgetting: Option<f64>,
    /// Lower bound on the Rm of the union of the lineage's eval splits.
    pub min_union_rm: Option<f64>,
    /// Upper bound on the mean drop, over the parent's tasks, of Rm from parent to version.
    pub max_rm_drop: Option<f64>,
    /// Upper bound on the drop of mean Rm from the parent on each anchor suite, refused only
    /// when significant (the paired bootstrap's 95 % lower bound exceeds it; docs/anchors.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_anchor_drop: Option<f64>,
    /// Bootstrap resamples for `max_anchor_drop` (`None` = 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor_resamples: Option<u32>,
}

impl GatePolicy {
    /// True when no bound is set (no gate).
    pub fn is_empty(&self) -> bool {
        *self == GatePolicy::default()
    }
}

impl Store {
    /// Stores the model's gate (an empty policy clears it) and returns what is stored.
    ///
    /// # Errors
    /// `NotFound` for an unknown model.
    pub async fn set_gate(&self, model: &str, gate: &GatePolicy) -> Result<GatePolicy> {
        let json = (!gate.is_empty())
            .then(|| serde_json::to_string(gate))
            .transpose()
            .map_err(|e| StoreError::Invalid(format!("gate: {e}")))?;
        let mut conn = self.db.acquire().await?;
        let n = conn
            .exec()
            .execute(
                "UPDATE models SET gate_json = $2 WHERE name = $1",
                args![model, json.as_deref()],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::not_found(format!("model {model:?}")));
        }
        Ok(gate.clone())
    }

    /// The model's gate (empty when none is set).
    ///
    /// # Errors
    /// `NotFound` for an unknown model.
    pub async fn gate(&self, model: &str) -> Result<GatePolicy> {
        let mut conn = self.db.acquire().await?;
        let mut ex = conn.exec();
        load_model(&mut ex, model).await?;
        let (json,): (Option<String>,) = ex
            .fetch_one("SELECT gate_json FROM models WHERE name = $1", args![model])
            .await?;
        match json {
            Some(j) => serde_json::from_str(&j)
                .map_err(|e| StoreError::Invalid(format!("gate of model {model:?}: {e}"))),
            None => Ok(GatePolicy::default()),
        }
    }
}
