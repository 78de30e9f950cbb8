//! `ctpctl gate`: show or set a model's promotion gate.
use serde_json::json;

use super::args::GateArgs;
use super::conn::Client;
use super::error::CliResult;
use super::output::print_json;
use ctp_api::pb;

/// One line per bound, or "no gate".
pub fn describe(model: &str, g: &pb::PromotionGate) -> String {
    let mut parts = Vec::new();
    if let Some(v) = g.max_avg_forgetting {
        parts.push(format!("average forgetting <= {v}"));
    }
    if let Some(v) = g.min_union_rm {
        parts.push(format!("union Rm >= {v}"));
    }
    if let Some(v) = g.max_rm_drop {
        parts.push(format!("Rm drop from the parent <= {v}"));
    }
    if let Some(v) = g.max_anchor_drop {
        parts.push(format!(
            "no anchor suite's Rm drop from the parent is significantly above {v} \
             (95 % paired bootstrap, {} resamples)",
            g.anchor_resamples.unwrap_or(1000)
        ));
    }
    if parts.is_empty() {
        format!("{model}: no promotion gate (every new version becomes the head)")
    } else {
        format!(
            "{model}: a new version becomes the head only if {}",
            parts.join(", ")
        )
    }
}

pub async fn gate(client: &mut Client, a: &GateArgs, json: bool) -> CliResult {
    let set = a.clear
        || a.max_avg_forgetting.is_some()
        || a.min_union_rm.is_some()
        || a.max_rm_drop.is_some()
        || a.max_anchor_drop.is_some();
    let g = if set {
        client
            .set_promotion_gate(pb::SetPromotionGateRequest {
                model: a.model.clone(),
                gate: Some(pb::PromotionGate {
                    max_avg_forgetting: a.max_avg_forgetting,
                    min_union_rm: a.min_union_rm,
                    max_rm_drop: a.max_rm_drop,
                    max_anchor_drop: a.max_anchor_drop,
                    anchor_resamples: a.anchor_resamples,
                }),
            })
            .await?
            .into_inner()
    } else {
        client
            .get_promotion_gate(pb::GetPromotionGateRequest {
                model: a.model.clone(),
            })
            .await?
            .into_inner()
    };
    if json {
        print_json(&json!({
            "model": a.model,
            "max_avg_forgetting": g.max_avg_forgetting,
            "min_union_rm": g.min_union_rm,
            "max_rm_drop": g.max_rm_drop,
            "max_anchor_drop": g.max_anchor_drop,
            "anchor_resamples": g.anchor_resamples,
        }));
    } else {
        println!("{}", describe(&a.model, &g));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_each_bound() {
        assert!(describe("m", &pb::PromotionGate::default()).contains("no promotion gate"));
        let d = describe(
            "m",
            &pb::PromotionGate {
                max_avg_forgetting: Some(20.0),
                min_union_rm: None,
                max_rm_drop: Some(5.0),
                ..Default::default()
            },
        );
        assert_eq!(
            d,
            "m: a new version becomes the head only if average forgetting <= 20, Rm drop from the parent <= 5"
        );
        let d = describe(
            "m",
            &pb::PromotionGate {
                max_anchor_drop: Some(2.0),
                ..Default::default()
            },
        );
        assert!(
            d.ends_with("significantly above 2 (95 % paired bootstrap, 1000 resamples)"),
            "{d}"
        );
    }
}
