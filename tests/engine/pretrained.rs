//! The `small` preset's pretrained towers reproduce known outputs (docs/data.md, "Pretrained weights").
use ctp::trainer::data::TextTokenizer;
use ctp::trainer::model::{bert::masked_mean, images_to_tensor, normalize, CtpModel};
use ctp::trainer::{ModelConfig, Preset};
use tch::{Device, Kind, Tensor};

use crate::assets;

fn small(image_size: i64) -> CtpModel {
    let cfg = ModelConfig {
        image_size,
        ..ModelConfig::preset(Preset::Small)
    };
    let tok = TextTokenizer::load(&assets::weights()).unwrap();
    let mut m = CtpModel::new(&cfg, tok.vocab, Device::Cpu);
    m.load_pretrained(&assets::weights()).unwrap();
    m
}

/// MiniLM (text layers only, masked mean pooling, L2 norm) gives the sentence-transformers
/// similarities: 0.755 and −0.040.
#[test]
fn minilm_reproduces_reference_similarities() {
    let _torch = crate::torch_alone();
    let m = small(64);
    let tok = TextTokenizer::load(&assets::weights()).unwrap();
    let texts: Vec<String> = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The new movie is awesome",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (ids, mask) = tok.encode(&texts, 32).unwrap();
    assert_eq!(
        Vec::<i64>::try_from(ids.get(0).narrow(0, 0, 3)).unwrap(),
        vec![101, 1037, 2158],
        "tokenizer: [CLS] a man"
    );
    let emb =
        tch::no_grad(|| normalize(&masked_mean(&m.bert.encode_text(&ids, &mask, 0.0), &mask)));
    let cos = |i: i64, j: i64| (emb.get(i) * emb.get(j)).sum(Kind::Float).double_value(&[]);
    assert!((cos(0, 1) - 0.755).abs() < 0.002, "cos = {}", cos(0, 1));
    assert!((cos(0, 2) + 0.040).abs() < 0.002, "cos = {}", cos(0, 2));
    let first: Vec<f32> = Vec::try_from(emb.get(0).narrow(0, 0, 5)).unwrap();
    for (g, w) in first
        .iter()
        .zip([0.0332f32, 0.0044, -0.0063, 0.0484, -0.1387])
    {
        assert!((g - w).abs() < 5e-4, "{first:?}");
    }
}

/// EfficientNet-Lite0 with its ImageNet classifier calls the Noto soccer-ball emoji class 805.
#[test]
fn efficientnet_classifies_the_soccer_ball_emoji() {
    let _torch = crate::torch_alone();
    let png =
        assets::assets().join("npm/node_modules/emoji-datasource-google/img/google/64/26bd.png");
    let bytes = std::fs::read(&png).unwrap();
    let pixels = ctp::images::decode_rgb(&bytes, &Default::default(), 224).unwrap();
    let m = small(224);
    let fc: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(assets::weights().join("efficientnet-lite0.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let probs = tch::no_grad(|| {
        let (_, pooled) = m.image(&images_to_tensor(&pixels, 1, 224, Device::Cpu), false);
        pooled
            .linear(&fc["_fc.weight"], Some(&fc["_fc.bias"]))
            .softmax(-1, Kind::Float)
    });
    let top = probs.argmax(-1, false).int64_value(&[0]);
    let p = probs.double_value(&[0, top]);
    assert_eq!(top, 805, "top-1 class {top} (p = {p})");
    assert!(p > 0.8, "p(soccer ball) = {p}");
}
