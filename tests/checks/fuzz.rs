//! A bounded fuzz pass over every parser that reads untrusted bytes: SubmitTask messages and
//! their per-sample validation, image decoding under limits, the WebDataset tar reader, the
//! JSONL reader and the config file parser.
//!
//! Each target starts from its seed corpus in `tests/fuzz/corpus/<target>/` (kept in the
//! repository) and applies random mutations (bit flips, byte edits, insertions, deletions,
//! duplicated ranges, truncation, splices of two inputs, boundary integers) for
//! `CTP_FUZZ_SECONDS` seconds (default 3). A parser must return `Ok` or `Err`; a panic fails
//! the test and saves the input under `target/fuzz-failures/`. `CTP_FUZZ_SEED` fixes the
//! random seed (printed on every run) to replay a failure.
//!
//! Regenerate the seed corpus with
//! `cargo test --test checks -- --ignored fuzz::write_seed_corpus`.
use std::io::Write;
use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ctp::api::submit::{check_sample, SampleRules, SplitMode};
use ctp::config::{Overrides, Settings};
use ctp::images::ImageLimits;
use ctp_api::pb;
use prost::Message;

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One random mutation of `input` (possibly splicing in part of `other`).
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    const INTERESTING: [u32; 8] = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fff_ffff, 0xffff_ffff];
    let len = input.len();
    match rng.below(8) {
        0 if len > 0 => {
            let i = rng.below(len);
            input[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            input[i] = rng.next() as u8;
        }
        2 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            input.splice(at..at, bytes);
        }
        3 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(64)).min(len);
            input.drain(a..b);
        }
        4 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(64)).min(len);
            let copy = input[a..b].to_vec();
            let at = rng.below(len + 1);
            input.splice(at..at, copy);
        }
        5 => input.truncate(rng.below(len + 1)),
        6 if !other.is_empty() => {
            let a = rng.below(other.len());
            let b = (a + 1 + rng.below(256)).min(other.len());
            let at = rng.below(len + 1);
            input.splice(at..at, other[a..b].iter().copied());
        }
        _ if len >= 4 => {
            let at = rng.below(len - 3);
            let v = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
            input[at..at + 4].copy_from_slice(&v);
        }
        _ => input.push(rng.next() as u8),
    }
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target)
}

fn load_corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    let corpus: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!corpus.is_empty(), "empty corpus {}", dir.display());
    corpus
}

/// Runs `check` on every seed, then on mutants until the time budget is spent. Returns the
/// number of inputs tried and how many of them the parser accepted.
fn fuzz(target: &str, check: &dyn Fn(&[u8]) -> bool) -> (u64, u64) {
    let seconds: u64 = std::env::var("CTP_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("CTP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1;
    eprintln!("fuzz {target}: CTP_FUZZ_SEED={seed}, {seconds} s");
    let corpus = load_corpus(target);
    let mut rng = Rng(seed);
    let run = |input: &[u8]| -> bool {
        match catch_unwind(AssertUnwindSafe(|| check(input))) {
            Ok(accepted) => accepted,
            Err(_) => {
                let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join(format!("{target}-{seed}"));
                std::fs::write(&path, input).unwrap();
                panic!(
                    "fuzz {target} panicked (CTP_FUZZ_SEED={seed}); input saved to {}",
                    path.display()
                );
            }
        }
    };
    let (mut tried, mut accepted) = (0u64, 0u64);
    for seed_input in &corpus {
        tried += 1;
        accepted += u64::from(run(seed_input));
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        let mut input = corpus[rng.below(corpus.len())].clone();
        let other = &corpus[rng.below(corpus.len())];
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut input, other);
        }
        tried += 1;
        accepted += u64::from(run(&input));
    }
    eprintln!("fuzz {target}: {tried} inputs, {accepted} accepted");
    (tried, accepted)
}

fn limits() -> ImageLimits {
    ImageLimits {
        max_bytes: 1 << 20,
        max_width: 256,
        max_height: 256,
    }
}

/// A temp file holding `bytes`, with the given extension.
fn temp_file(dir: &Path, ext: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(format!("input.{ext}"));
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(bytes).unwrap();
    path
}

#[test]
fn fuzz_submit_messages_and_sample_validation() {
    let rules = |split| SampleRules {
        split,
        seed: 7,
        max_caption_bytes: 1024,
        image: limits(),
        size: 32,
    };
    let (tried, _) = fuzz("submit", &|bytes| {
        let Ok(req) = pb::SubmitTaskRequest::decode(bytes) else {
            return false;
        };
        let Some(pb::submit_task_request::Msg::Chunk(chunk)) = req.msg else {
            return true;
        };
        let mut ok = true;
        for (i, s) in chunk.samples.into_iter().enumerate() {
            for split in [SplitMode::PerSample, SplitMode::Fraction(0.25)] {
                ok &= check_sample(i, s.clone(), &rules(split)).is_ok();
            }
        }
        ok
    });
    assert!(tried > 0);
}

#[test]
fn fuzz_image_decoding_under_limits() {
    let (_, accepted) = fuzz(
        "image",
        &|bytes| match ctp::images::decode_rgb(bytes, &limits(), 32) {
            Ok(px) => {
                assert_eq!(px.len(), 32 * 32 * 3, "decoded image has the preset's size");
                true
            }
            Err(_) => false,
        },
    );
    assert!(accepted > 0, "the seed images decode");
}

#[test]
fn fuzz_webdataset_shards() {
    let dir = tempfile::tempdir().unwrap();
    let (_, accepted) = fuzz("webdataset", &|bytes| {
        let path = temp_file(dir.path(), "tar", bytes);
        ctp_datasets::webdataset::visit_shard(&path, &mut |_| ControlFlow::Continue(())).is_ok()
    });
    assert!(accepted > 0, "the seed shards read");
}

#[test]
fn fuzz_jsonl_manifests() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.png"), tiny_png()).unwrap();
    let (_, accepted) = fuzz("jsonl", &|bytes| {
        let path = temp_file(dir.path(), "jsonl", bytes);
        ctp_datasets::jsonl::visit(&path, &mut |_| ControlFlow::Continue(())).is_ok()
    });
    assert!(accepted > 0, "the seed manifests read");
}

#[test]
fn fuzz_config_files() {
    let dir = tempfile::tempdir().unwrap();
    let (_, accepted) = fuzz("config", &|bytes| {
        let path = temp_file(dir.path(), "toml", bytes);
        Settings::load(Some(&path), Vec::new(), &Overrides::default()).is_ok()
    });
    assert!(accepted > 0, "the seed configs load");
}

fn tiny_png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 30, y as u8 * 30, 90]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Writes the seed corpus (run by hand; the files are committed).
#[test]
#[ignore]
fn write_seed_corpus() {
    use ctp_datasets::{webdataset::ShardWriter, DatasetSample, Split};
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let png = tiny_png();
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
        16,
        8,
        image::Rgb([200, 10, 10]),
    ))
    .write_to(&mut jpeg, image::ImageFormat::Jpeg)
    .unwrap();
    let jpeg = jpeg.into_inner();
    put("image", "png", &png);
    put("image", "jpeg", &jpeg);

    let sample = |id: &str, split: i32, image: &[u8]| pb::Sample {
        image: image.to_vec(),
        caption: format!("a red square {id}").into_bytes(),
        id: id.into(),
        split,
    };
    let chunk = pb::SubmitTaskRequest {
        msg: Some(pb::submit_task_request::Msg::Chunk(pb::SampleChunk {
            samples: vec![
                sample("a", pb::Split::Train as i32, &png),
                sample("b", pb::Split::Eval as i32, &jpeg),
                sample("c", pb::Split::Unspecified as i32, &png),
            ],
        })),
    };
    put("submit", "chunk", &chunk.encode_to_vec());
    let header = pb::SubmitTaskRequest {
        msg: Some(pb::submit_task_request::Msg::Header(pb::TaskHeader {
            model: "m".into(),
            preset: "tiny".into(),
            task_name: "t".into(),
            ..Default::default()
        })),
    };
    put("submit", "header", &header.encode_to_vec());

    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("shard.tar");
    let mut w = ShardWriter::create(&shard).unwrap();
    for (id, split) in [
        ("s1", Some(Split::Train)),
        ("s2", Some(Split::Eval)),
        ("s3", None),
    ] {
        w.append(&DatasetSample {
            image: png.clone(),
            caption: format!("caption of {id}"),
            id: id.into(),
            split,
        })
        .unwrap();
    }
    let shard = w.finish().unwrap();
    put("webdataset", "shard.tar", &std::fs::read(shard).unwrap());

    put(
        "jsonl",
        "manifest.jsonl",
        br#"{"id": "a", "image": "a.png", "caption": "a red square", "split": "train"}
{"id": "b", "image": "a.png", "caption": "the same square", "split": "eval"}
"#,
    );
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config/ctpd.example.toml");
    put("config", "example.toml", &std::fs::read(example).unwrap());
    put(
        "config",
        "small.toml",
        b"listen = \"127.0.0.1:1\"\n[limits]\nmax_image_side = 64\n",
    );
}
