//! Every CTP loss term equals the same formula computed by PyTorch (tests/golden/losses.py) on
//! fixed inputs, to 1e-5.
use ctp::trainer::{checkpoint, losses, model::normalize};
use tch::{Device, Kind, Tensor};

use crate::assets;

#[test]
fn every_loss_term_matches_pytorch() {
    let _torch = crate::torch_alone();
    tch::manual_seed(1234);
    let opts = (Kind::Float, Device::Cpu);
    let (b, e, q, m, vocab) = (8, 16, 20, 6, 50);
    let unit = |rows| normalize(&Tensor::randn([rows, e], opts));
    let (v, w, v_ref, w_ref, v_m, w_m) = (unit(b), unit(b), unit(b), unit(b), unit(b), unit(b));
    let (img_queue, txt_queue) = (unit(q), unit(q));
    let z = Tensor::randn([m, vocab], opts) * 3.0;
    let z_m = Tensor::randn([m, vocab], opts) * 3.0;
    let labels = Tensor::randint(vocab, [m], (Kind::Int64, Device::Cpu));
    let temp = 0.07;

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    let named: Vec<(String, Tensor)> = [
        ("v", &v),
        ("w", &w),
        ("v_ref", &v_ref),
        ("w_ref", &w_ref),
        ("v_m", &v_m),
        ("w_m", &w_m),
        ("img_queue", &img_queue),
        ("txt_queue", &txt_queue),
        ("z", &z),
        ("z_m", &z_m),
        ("labels", &labels),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), t.shallow_clone()))
    .chain([("temp".to_string(), Tensor::from_slice(&[temp as f32]))])
    .collect();
    checkpoint::save(&input, &named, &serde_json::json!({})).unwrap();
    let output = dir.path().join("out.json");
    let status = std::process::Command::new(assets::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/losses.py"
        ))
        .arg(&input)
        .arg(&output)
        .status()
        .unwrap();
    assert!(status.success(), "the PyTorch reference script failed");
    let want: serde_json::Value = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();

    let got = [
        ("itc", losses::itc(&v, &w, temp)),
        (
            "itc_queue",
            losses::queue_itc(&v, &w, &v_m, &w_m, &img_queue, &txt_queue, temp),
        ),
        ("mlm", losses::mlm(&z, &labels)),
        ("mlm_distill", losses::mlm_distill(&z, &z_m, 1.0)),
        ("tp_cross", losses::tp_cross(&v, &w, &v_ref, &w_ref, temp)),
        ("tp_intra", losses::tp_intra(&v, &w, &v_ref, &w_ref, temp)),
    ];
    for (name, t) in got {
        let g = t.double_value(&[]);
        let wv = want[name].as_f64().unwrap();
        let tol = 1e-5 * wv.abs().max(1.0);
        assert!((g - wv).abs() < tol, "{name}: ctp {g} vs pytorch {wv}");
        assert!(
            g.is_finite() && g.abs() > 1e-6,
            "{name} is degenerate ({g}); the test would prove nothing"
        );
    }
    // Topology preservation vanishes when the current model equals the reference.
    assert!(
        losses::tp_cross(&v, &w, &v, &w, temp)
            .double_value(&[])
            .abs()
            < 1e-6
    );
    assert!(
        losses::tp_intra(&v, &w, &v, &w, temp)
            .double_value(&[])
            .abs()
            < 1e-6
    );
}
