//! Anchor suites (issue #25 §2, docs/anchors.md): named held-out image-caption sets of a model
//! that belong to no task, and every version's results on them (metrics and per-sample hits).

use chrono::{DateTime, Utc};

use super::db::{args, now, Exec};
use super::rows::load_model;
use super::{Result, Store, StoreError};

/// A registered anchor suite.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct AnchorSuite {
    pub model: String,
    pub name: String,
    /// The suite's content-addressed bundle (data-dir-relative, like `tasks.data_dir`).
    pub bundle_path: String,
    pub sha256: String,
    pub samples: i64,
    pub created_at: DateTime<Utc>,
    /// The token name that registered it.
    pub created_by: String,
}

/// What [`Store::register_anchor_suite`] stores.
#[derive(Clone, Debug)]
pub struct NewAnchorSuite {
    pub model: String,
    pub name: String,
    pub bundle_path: String,
    pub sha256: String,
    pub samples: i64,
    pub created_by: String,
}

/// One version's result on one anchor suite.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct AnchorEval {
    pub suite: String,
    pub samples: i64,
    pub tr1: f64,
    pub tr5: f64,
    pub tr10: f64,
    pub ir1: f64,
    pub ir5: f64,
    pub ir10: f64,
    pub rm: f64,
    /// Per-sample hits as stored (`metrics::anchor::encode_hits`), in suite sample order.
    pub hits: String,
}

/// An anchor result with the version it belongs to, for bulk loading.
#[derive(sqlx::FromRow)]
struct VersionAnchor {
    version: i64,
    #[sqlx(flatten)]
    eval: AnchorEval,
}

const SUITE_COLUMNS: &str = "model, name, bundle_path, sha256, samples, created_at, created_by";
const ANCHOR_COLUMNS: &str = "suite, samples, tr1, tr5, tr10, ir1, ir5, ir10, rm, hits";

/// Anchor results of versions `lo..=hi` of `model`, as `(version, result)` by version, suite.
pub(super) async fn load_range(
    ex: &mut Exec<'_>,
    model: &str,
    lo: i64,
    hi: i64,
) -> Result<Vec<(i64, AnchorEval)>> {
    let rows: Vec<VersionAnchor> = ex
        .fetch_all(
            &format!(
                "SELECT version, {ANCHOR_COLUMNS} FROM anchor_results \
                 WHERE model = $1 AND version BETWEEN $2 AND $3 ORDER BY version, suite"
            ),
            args![model, lo, hi],
        )
        .await?;
    Ok(rows.into_iter().map(|r| (r.version, r.eval)).collect())
}

impl Store {
    /// Registers a suite. Names are not reused: a second suite of the same name on the model
    /// is `AlreadyExists` (a changed suite gets a new name, so results stay comparable).
    ///
    /// # Errors
    /// `NotFound` for an unknown model; `AlreadyExists` for a name already registered.
    pub async fn register_anchor_suite(&self, new: NewAnchorSuite) -> Result<AnchorSuite> {
        let mut tx = self.db.begin_write().await?;
        let mut ex = tx.exec();
        load_model(&mut ex, &new.model).await?;
        let sql =
            format!("SELECT {SUITE_COLUMNS} FROM anchor_suites WHERE model = $1 AND name = $2");
        if let Some(old) = ex
            .fetch_optional::<AnchorSuite>(&sql, args![&new.model, &new.name])
            .await?
        {
            return Err(StoreError::AlreadyExists {
                what: format!(
                    "anchor suite {:?} of model {:?} (registered {} by {:?}, {} samples, sha256 {}; \
                     suites are immutable: register the new samples under another name)",
                    old.name,
                    old.model,
                    old.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    old.created_by,
                    old.samples,
                    old.sha256
                ),
            });
        }
        let insert = format!(
            "INSERT INTO anchor_suites ({SUITE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             RETURNING {SUITE_COLUMNS}"
        );
        let row: AnchorSuite = ex
            .fetch_one(
                &insert,
                args![
                    &new.model,
                    &new.name,
                    &new.bundle_path,
                    &new.sha256,
                    new.samples,
                    now(),
                    &new.created_by
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// The model's suites, oldest first.
    ///
    /// # Errors
    /// `NotFound` for an unknown model.
    pub async fn anchor_suites(&self, model: &str) -> Result<Vec<AnchorSuite>> {
        let mut conn = self.db.acquire().await?;
        let mut ex = conn.exec();
        load_model(&mut ex, model).await?;
        let sql = format!(
            "SELECT {SUITE_COLUMNS} FROM anchor_suites WHERE model = $1 ORDER BY created_at, name"
        );
        Ok(ex.fetch_all(&sql, args![model]).await?)
    }

    /// Stores a version's results on suites. A result already stored for (version, suite)
    /// is kept: a suite's result is a function of the checkpoint and the suite, so a second
    /// evaluation (a retry, a peer daemon) changes nothing.
    pub async fn record_anchor_results(
        &self,
        model: &str,
        version: i64,
        results: &[AnchorEval],
    ) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        let mut ex = tx.exec();
        for r in results {
            ex.execute(
                &format!(
                    "INSERT INTO anchor_results (model, version, {ANCHOR_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                     ON CONFLICT (model, version, suite) DO NOTHING"
                ),
                args![
                    model, version, &r.suite, r.samples, r.tr1, r.tr5, r.tr10, r.ir1, r.ir5,
                    r.ir10, r.rm, &r.hits
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Anchor results per version of `model`, for versions `lo..=hi` (the model card's and
    /// the report's hook: every version's results, by version then suite).
    pub async fn anchor_results(
        &self,
        model: &str,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<(i64, AnchorEval)>> {
        let mut conn = self.db.acquire().await?;
        load_range(&mut conn.exec(), model, lo, hi).await
    }
}
