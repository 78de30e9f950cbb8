//! The model card of an exported version: JSON (`model_card.json`) and the same facts as
//! Markdown (`model_card.md`). Lineage with every task's effective training settings, the
//! accuracy matrix (Rm of each lineage version on each task it had seen), forgetting and BWT,
//! each version's gate decision, device, precision and checkpoint sha256. Anchor results
//! (issue #25) are not computed yet: `anchors` is `null` and the Markdown says so.
use serde_json::{json, Value};

use crate::store::{EvalRow, EvalScope, GatePolicy, TaskRow, VersionRow};
use crate::trainer::ModelConfig;

/// What a card is built from.
pub struct Card<'a> {
    pub version: &'a VersionRow,
    /// Root first, `version` last.
    pub lineage: &'a [VersionRow],
    /// The task of each lineage version, in the same order.
    pub tasks: &'a [TaskRow],
    pub gate: &'a GatePolicy,
    pub cfg: &'a ModelConfig,
    pub probe_source: &'a str,
    pub probe_samples: usize,
}

fn retrieval(e: &EvalRow) -> Value {
    json!({
        "task_id": e.task_id, "task_name": e.task_name,
        "tr1": e.tr1, "tr5": e.tr5, "tr10": e.tr10,
        "ir1": e.ir1, "ir5": e.ir5, "ir10": e.ir10, "rm": e.rm,
    })
}

fn opt(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{v:.2}"))
}

impl Card<'_> {
    pub fn json(&self) -> Value {
        let v = self.version;
        let lineage: Vec<Value> = self
            .lineage
            .iter()
            .zip(self.tasks)
            .map(|(lv, t)| {
                let settings: Value = serde_json::from_str(&t.settings_json).unwrap_or(Value::Null);
                let sources: Value = t
                    .sources_json
                    .as_deref()
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or(Value::Null);
                json!({
                    "version": lv.version,
                    "parent": lv.parent,
                    "created_at": lv.created_at.to_rfc3339(),
                    "task": {
                        "id": t.id, "name": t.name, "n_train": t.n_train, "n_eval": t.n_eval,
                        "sources": sources,
                    },
                    "settings": settings,
                    "momentum_syncs": lv.momentum_syncs,
                    "momentum_steps": lv.momentum_steps,
                    "device": lv.device,
                    "precision": lv.precision,
                    "checkpoint_sha256": lv.sha256,
                    "gate": {"decision": super::decision(lv), "reason": lv.rejected_reason},
                    "average_forgetting": lv.average_forgetting,
                    "bwt": lv.bwt,
                })
            })
            .collect();
        // Accuracy matrix: row i = lineage version i, column j = lineage task j (null before
        // the version had seen it).
        let columns: Vec<Value> = self
            .tasks
            .iter()
            .map(|t| json!({"task_id": t.id, "task_name": t.name}))
            .collect();
        let rows: Vec<Value> = self
            .lineage
            .iter()
            .map(|lv| {
                let rm: Vec<Option<f64>> = self
                    .tasks
                    .iter()
                    .map(|t| lv.task_evals().find(|e| e.task_id == t.id).map(|e| e.rm))
                    .collect();
                json!({"version": lv.version, "rm": rm})
            })
            .collect();
        let union = v.evals.iter().find(|e| e.scope == EvalScope::Union);
        json!({
            "format": "ctp-model-card/1",
            "model": v.model,
            "version": v.version,
            "preset": self.cfg.preset.as_str(),
            "created_at": v.created_at.to_rfc3339(),
            "checkpoint_sha256": v.sha256,
            "device": v.device,
            "precision": v.precision,
            "is_head": v.is_head,
            "gate": {"decision": super::decision(v), "reason": v.rejected_reason, "policy": self.gate},
            "architecture": self.cfg,
            "lineage": lineage,
            "evaluation": {
                "per_task": v.task_evals().map(retrieval).collect::<Vec<_>>(),
                "union": union.map(retrieval),
            },
            "accuracy_matrix": {"metric": "Rm", "columns": columns, "rows": rows},
            "forgetting": {
                "average": v.average_forgetting,
                "per_task": v.forgetting.iter()
                    .map(|(t, f)| json!({"task_id": t, "forgetting": f}))
                    .collect::<Vec<_>>(),
            },
            "bwt": v.bwt,
            "probe": {"source": self.probe_source, "samples": self.probe_samples, "file": "probe.json"},
            "anchors": Value::Null,
        })
    }

    pub fn markdown(&self, card: &Value) -> String {
        let v = self.version;
        let mut s = format!(
            "# {} version {}\n\nA `{}` CTP vision-language model trained by ctpd through {} task(s). \
             Exported with its configuration (`config.json`), tokenizer and probe set; \
             docs/export.md says how to convert and verify it.\n\n",
            v.model,
            v.version,
            self.cfg.preset.as_str(),
            self.lineage.len()
        );
        s.push_str(&format!(
            "| | |\n|---|---|\n| checkpoint sha256 | `{}` |\n| created | {} |\n| device | {} |\n\
             | precision | {} |\n| embedding dim | {} |\n| image size | {} px |\n| head | {} |\n\
             | gate | {}{} |\n| average forgetting | {} |\n| BWT (positive = forgetting) | {} |\n\n",
            v.sha256,
            v.created_at.to_rfc3339(),
            or_unknown(&v.device),
            or_unknown(&v.precision),
            self.cfg.embed_dim,
            self.cfg.image_size,
            if v.is_head { "yes" } else { "no" },
            super::decision(v),
            v.rejected_reason
                .as_deref()
                .map_or(String::new(), |r| format!(": {r}")),
            opt(v.average_forgetting),
            opt(v.bwt),
        ));
        s.push_str("## Lineage\n\n| version | task | train / eval samples | method | epochs | batch | lr | seed | syncs / steps | gate |\n|---|---|---|---|---|---|---|---|---|---|\n");
        for (lv, row) in self
            .lineage
            .iter()
            .zip(card["lineage"].as_array().into_iter().flatten())
        {
            let st = &row["settings"];
            s.push_str(&format!(
                "| {} | {} | {} / {} | {} | {} | {} | {} | {} | {} / {} | {} |\n",
                lv.version,
                lv.task_name,
                row["task"]["n_train"],
                row["task"]["n_eval"],
                st["method"].as_str().unwrap_or("?"),
                st["epochs"],
                st["batch_size"],
                st["learning_rate"],
                st["seed"],
                lv.momentum_syncs,
                lv.momentum_steps,
                super::decision(lv),
            ));
        }
        s.push_str(
            "\nEvery task's full settings are under `lineage[].settings` in model_card.json.\n\n",
        );
        s.push_str("## Accuracy matrix (Rm, %)\n\nRow: a version of the lineage; column: the eval split of a task.\n\n| version |");
        for t in self.tasks {
            s.push_str(&format!(" {} |", t.name));
        }
        s.push_str(&format!("\n|---|{}\n", "---|".repeat(self.tasks.len())));
        for row in card["accuracy_matrix"]["rows"]
            .as_array()
            .into_iter()
            .flatten()
        {
            s.push_str(&format!("| {} |", row["version"]));
            for x in row["rm"].as_array().into_iter().flatten() {
                s.push_str(&format!(" {} |", opt(x.as_f64())));
            }
            s.push('\n');
        }
        s.push_str("\n## This version's retrieval (%)\n\n| task | TR@1 | TR@5 | TR@10 | IR@1 | IR@5 | IR@10 | Rm | forgetting |\n|---|---|---|---|---|---|---|---|---|\n");
        let union = v.evals.iter().find(|e| e.scope == EvalScope::Union);
        for e in v.task_evals().chain(union) {
            let f = v
                .forgetting
                .iter()
                .find(|(t, _)| *t == e.task_id && e.scope == EvalScope::Task);
            s.push_str(&format!(
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |\n",
                if e.scope == EvalScope::Union {
                    "union of seen tasks"
                } else {
                    &e.task_name
                },
                e.tr1,
                e.tr5,
                e.tr10,
                e.ir1,
                e.ir5,
                e.ir10,
                e.rm,
                opt(f.map(|x| x.1)),
            ));
        }
        s.push_str(&format!(
            "\n## Promotion gate\n\nPolicy now: {}.\n\n## Probe set\n\n{} sample(s), the first of the \
             version's own task's eval split (`probe.json`); embeddings {} (fp32).\n\n\
             ## Anchor results\n\nNot computed yet (`anchors: null` in model_card.json).\n",
            serde_json::to_string(self.gate).unwrap_or_default(),
            self.probe_samples,
            if self.probe_source == "stored" {
                "stored by the engine when the version was committed"
            } else {
                "computed by the engine for this export (the version predates stored probes)"
            },
        ));
        s
    }
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "unknown (recorded since 0.2)"
    } else {
        s
    }
}
