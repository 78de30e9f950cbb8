//! SetPromotionGate / GetPromotionGate: the per-model forgetting policy (issue #10).
use super::status::ApiError;
use crate::state::AppState;
use crate::store::GatePolicy;
use ctp_api::pb;

/// Checks every bound: finite and within [−100, 100] Rm points (`min_union_rm` within [0, 100]).
pub fn from_pb(g: Option<pb::PromotionGate>) -> Result<GatePolicy, ApiError> {
    let g = g.unwrap_or_default();
    let check = |name: &str, v: Option<f64>, lo: f64| -> Result<Option<f64>, ApiError> {
        match v {
            Some(x) if !x.is_finite() || x < lo || x > 100.0 => Err(ApiError::Invalid(format!(
                "gate.{name}: {x} is outside [{lo}, 100] (Rm points)"
            ))),
            other => Ok(other),
        }
    };
    Ok(GatePolicy {
        max_avg_forgetting: check("max_avg_forgetting", g.max_avg_forgetting, -100.0)?,
        min_union_rm: check("min_union_rm", g.min_union_rm, 0.0)?,
        max_rm_drop: check("max_rm_drop", g.max_rm_drop, -100.0)?,
        max_anchor_drop: check("max_anchor_drop", g.max_anchor_drop, -100.0)?,
        anchor_resamples: match g.anchor_resamples {
            Some(n) if !(100..=100_000).contains(&n) => {
                return Err(ApiError::Invalid(format!(
                    "gate.anchor_resamples: {n} is outside [100, 100000]"
                )))
            }
            other => other,
        },
    })
}

pub fn to_pb(g: &GatePolicy) -> pb::PromotionGate {
    pb::PromotionGate {
        max_avg_forgetting: g.max_avg_forgetting,
        min_union_rm: g.min_union_rm,
        max_rm_drop: g.max_rm_drop,
        max_anchor_drop: g.max_anchor_drop,
        anchor_resamples: g.anchor_resamples,
    }
}

pub async fn set(
    state: &AppState,
    r: pb::SetPromotionGateRequest,
    who: &str,
) -> Result<pb::PromotionGate, ApiError> {
    let policy = from_pb(r.gate)?;
    let stored = state.store.set_gate(&r.model, &policy).await?;
    tracing::info!(model = %r.model, gate = ?stored, who = %who, "Promotion gate set");
    Ok(to_pb(&stored))
}

pub async fn get(
    state: &AppState,
    r: pb::GetPromotionGateRequest,
) -> Result<pb::PromotionGate, ApiError> {
    Ok(to_pb(&state.store.gate(&r.model).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked_and_named() {
        let ok = pb::PromotionGate {
            max_avg_forgetting: Some(20.0),
            min_union_rm: Some(5.0),
            max_rm_drop: None,
            max_anchor_drop: Some(2.5),
            anchor_resamples: Some(500),
        };
        let g = from_pb(Some(ok)).unwrap();
        assert_eq!(to_pb(&g), ok);
        assert!(from_pb(None).unwrap().is_empty());
        for bad in [
            pb::PromotionGate {
                min_union_rm: Some(-1.0),
                ..Default::default()
            },
            pb::PromotionGate {
                min_union_rm: Some(101.0),
                ..Default::default()
            },
            pb::PromotionGate {
                max_rm_drop: Some(f64::NAN),
                ..Default::default()
            },
            pb::PromotionGate {
                max_anchor_drop: Some(f64::INFINITY),
                ..Default::default()
            },
            pb::PromotionGate {
                anchor_resamples: Some(10),
                ..Default::default()
            },
        ] {
            let e = from_pb(Some(bad)).unwrap_err().to_string();
            assert!(e.starts_with("gate."), "{e}");
        }
    }
}
