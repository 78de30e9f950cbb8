//! The probe set a version carries for verified export (issue #25): the first
//! [`PROBE_SAMPLES`] samples of the version's own task's eval split, as the model saw them
//! (preprocessed pixels, captions), with the version's L2-normalised embeddings of them. The
//! engine computes them when it writes the version checkpoint and stores them **inside** it
//! (tensors `probe.*`, captions in the metadata), so the recorded sha256 covers them, backup,
//! restore, verify and object storage handle them as part of the checkpoint, and an export
//! reads them without engine time. [`read_extras`] reads them back (and the metadata) from the
//! file's safetensors header without loading the weights or touching libtorch.
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::checkpoint::META;
use super::config::Precision;
use super::data::TaskTensors;
use super::model::CtpModel;
use super::TrainerError;

/// How many eval samples the probe takes (fewer when the split is smaller).
pub const PROBE_SAMPLES: usize = 8;

/// Tensor names inside a version checkpoint.
pub const PIXELS: &str = "probe.pixels";
pub const IMAGE_EMBEDDINGS: &str = "probe.image_embeddings";
pub const TEXT_EMBEDDINGS: &str = "probe.text_embeddings";

/// A version's probe: inputs and the daemon's embeddings of them (row i of each belongs
/// together).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Image side S: each entry of `pixels` is S×S×3 RGB, HWC, u8 (after decoding and
    /// resizing, before scaling).
    pub image_size: i64,
    pub pixels: Vec<Vec<u8>>,
    pub captions: Vec<String>,
    pub image_embeddings: Vec<Vec<f32>>,
    pub text_embeddings: Vec<Vec<f32>>,
}

/// The probe's inputs as the engine holds them while training (tokenised once).
pub(crate) struct ProbeSet {
    pub data: TaskTensors,
    pub captions: Vec<String>,
}

/// Embeds the probe with `m` in fp32 and eval mode (what `Embed` computes) and returns the
/// tensors to store plus the metadata entry (`meta["probe"]`).
pub(crate) fn embed(
    m: &mut CtpModel,
    set: &ProbeSet,
) -> Result<(Vec<(String, Tensor)>, serde_json::Value), TrainerError> {
    // Embed loads versions at fp32 (`eval::load_online`), so the stored embeddings are fp32
    // even for a version trained under bf16. Training is over: the switch changes nothing else.
    m.set_precision(Precision::Fp32);
    // …and in the default memory format, as `Embed` runs (engine.channels_last is a training
    // setting).
    m.set_channels_last(false);
    let (img, txt) = super::eval::encode(m, &set.data);
    let cpu = |t: Tensor| t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let tensors = vec![
        (PIXELS.to_string(), set.data.pixels.to_device(Device::Cpu)),
        (IMAGE_EMBEDDINGS.to_string(), cpu(img)),
        (TEXT_EMBEDDINGS.to_string(), cpu(txt)),
    ];
    let meta = serde_json::json!({
        "captions": set.captions,
        "samples": set.captions.len(),
        "precision": "fp32",
    });
    Ok((tensors, meta))
}

/// A version checkpoint's metadata and probe (`None` for versions written before probes
/// were stored), read from the safetensors header and the few byte ranges they occupy.
#[derive(Debug, Clone)]
pub struct Extras {
    pub meta: serde_json::Value,
    pub probe: Option<Probe>,
    /// Every tensor's shape by name (`__meta__` excluded).
    pub shapes: BTreeMap<String, Vec<u64>>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// A tensor's shape and raw little-endian bytes.
type Raw = (Vec<u64>, Vec<u8>);

/// The largest safetensors header accepted (a checkpoint's is a few hundred KiB).
const MAX_HEADER: u64 = 64 << 20;

/// Reads [`Extras`] from a checkpoint without loading its weights (no libtorch).
pub fn read_extras(path: &Path) -> Result<Extras, TrainerError> {
    let bad = |what: String| TrainerError::Checkpoint(format!("{}: {what}", path.display()));
    let mut f = File::open(path).map_err(|e| TrainerError::io(path, e))?;
    let file_len = f.metadata().map_err(|e| TrainerError::io(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let header_len = u64::from_le_bytes(n);
    if header_len > MAX_HEADER || 8 + header_len > file_len {
        return Err(bad(format!("header of {header_len} bytes is implausible")));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header)
        .map_err(|e| TrainerError::io(path, e))?;
    let mut entries: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("unreadable safetensors header: {e}")))?;
    entries.remove("__metadata__");
    let shapes: BTreeMap<String, Vec<u64>> = entries
        .iter()
        .filter(|(n, _)| n.as_str() != META)
        .filter_map(|(n, v)| Some((n.clone(), serde_json::from_value(v["shape"].clone()).ok()?)))
        .collect();
    let base = 8 + header_len;
    let mut read = |name: &str, dtype: &str| -> Result<Option<Raw>, TrainerError> {
        let Some(v) = entries.get(name) else {
            return Ok(None);
        };
        let e: Entry = serde_json::from_value(v.clone())
            .map_err(|err| bad(format!("tensor {name}: {err}")))?;
        let [lo, hi] = e.data_offsets;
        if e.dtype != dtype || lo > hi || base + hi > file_len {
            return Err(bad(format!("tensor {name} is not a valid {dtype} entry")));
        }
        let mut buf = vec![0u8; (hi - lo) as usize];
        f.seek(SeekFrom::Start(base + lo))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|err| TrainerError::io(path, err))?;
        Ok(Some((e.shape, buf)))
    };
    let (_, meta) = read(META, "U8")?.ok_or_else(|| bad(format!("no {META} entry")))?;
    let meta: serde_json::Value =
        serde_json::from_slice(&meta).map_err(|e| bad(format!("bad metadata: {e}")))?;
    let probe = match (
        read(PIXELS, "U8")?,
        read(IMAGE_EMBEDDINGS, "F32")?,
        read(TEXT_EMBEDDINGS, "F32")?,
    ) {
        (Some((ps, px)), Some((is, ib)), Some((ts, tb))) => {
            let captions: Vec<String> = serde_json::from_value(meta["probe"]["captions"].clone())
                .map_err(|e| bad(format!("probe captions: {e}")))?;
            let n = captions.len();
            let ok = ps.len() == 4
                && ps[0] as usize == n
                && ps[1] == ps[2]
                && ps[3] == 3
                && is.len() == 2
                && is == ts
                && is[0] as usize == n;
            if !ok {
                return Err(bad(format!(
                    "probe shapes disagree (pixels {ps:?}, embeddings {is:?} / {ts:?}, {n} captions)"
                )));
            }
            let rows = |b: Vec<u8>| -> Vec<Vec<f32>> {
                let floats: Vec<f32> = b
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                floats.chunks(is[1] as usize).map(<[f32]>::to_vec).collect()
            };
            let px_len = (ps[1] * ps[2] * 3) as usize;
            Some(Probe {
                image_size: ps[1] as i64,
                pixels: px.chunks(px_len).map(<[u8]>::to_vec).collect(),
                captions,
                image_embeddings: rows(ib),
                text_embeddings: rows(tb),
            })
        }
        (None, None, None) => None,
        _ => return Err(bad("incomplete probe tensors".into())),
    };
    Ok(Extras {
        meta,
        probe,
        shapes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::checkpoint;

    #[test]
    fn probe_tensors_read_back_without_libtorch() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.safetensors");
        let pixels: Vec<u8> = (0..2 * 2 * 2 * 3).map(|i| i as u8).collect();
        let img = [0.6f32, 0.8, 1.0, 0.0];
        let txt = [0.0f32, 1.0, -0.28, 0.96];
        let tensors = vec![
            ("online.w".to_string(), Tensor::from_slice(&[1.0f32; 6])),
            (
                PIXELS.to_string(),
                Tensor::from_slice(&pixels).view([2, 2, 2, 3]),
            ),
            (
                IMAGE_EMBEDDINGS.to_string(),
                Tensor::from_slice(&img).view([2, 2]),
            ),
            (
                TEXT_EMBEDDINGS.to_string(),
                Tensor::from_slice(&txt).view([2, 2]),
            ),
        ];
        let meta =
            serde_json::json!({"model": {"preset": "tiny"}, "probe": {"captions": ["a", "b"]}});
        checkpoint::save(&p, &tensors, &meta).unwrap();
        let x = read_extras(&p).unwrap();
        assert_eq!(x.meta["model"]["preset"], "tiny");
        assert_eq!(x.shapes["online.w"], [6]);
        let probe = x.probe.unwrap();
        assert_eq!(probe.image_size, 2);
        assert_eq!(
            probe.pixels,
            vec![pixels[..12].to_vec(), pixels[12..].to_vec()]
        );
        assert_eq!(probe.captions, ["a", "b"]);
        assert_eq!(probe.image_embeddings, vec![vec![0.6, 0.8], vec![1.0, 0.0]]);
        assert_eq!(probe.text_embeddings[1], vec![-0.28, 0.96]);

        // A checkpoint from before probes: metadata only.
        checkpoint::save(&p, &tensors[..1], &serde_json::json!({"k": 1})).unwrap();
        let x = read_extras(&p).unwrap();
        assert!(x.probe.is_none() && x.meta["k"] == 1);
        std::fs::write(&p, b"garbage!garbage!").unwrap();
        assert!(read_extras(&p).is_err());
    }
}
