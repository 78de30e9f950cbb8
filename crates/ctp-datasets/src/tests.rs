//! Reader/writer tests, including the malformed inputs users actually produce.
use std::io::Cursor;
use std::path::{Path, PathBuf};

use super::*;

/// A real (tiny) PNG, so the bytes are what a user's dataset would hold.
fn png(shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(2, 2, image::Rgb([shade, 0, 255 - shade]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn jpeg_magic() -> Vec<u8> {
    vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F']
}

/// Builds a tar from (name, bytes) entries with the `tar` crate, as img2dataset would.
fn tar_of(path: &Path, entries: &[(&str, Vec<u8>)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.finish().unwrap();
}

fn err_of(path: &Path) -> String {
    read_all(path).expect_err("expected an error").to_string()
}

fn sample(id: &str, caption: &str, split: Option<Split>) -> DatasetSample {
    DatasetSample {
        image: png(id.len() as u8),
        caption: caption.into(),
        id: id.into(),
        split,
    }
}

#[test]
fn webdataset_img2dataset_layout() {
    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("00000.tar");
    tar_of(
        &shard,
        &[
            ("00000/000000000.jpg", jpeg_magic()),
            ("00000/000000000.txt", b"a red car\n".to_vec()),
            (
                "00000/000000000.json",
                br#"{"url": "http://x", "status": "success"}"#.to_vec(),
            ),
            ("00000/000000001.png", png(1)),
            (
                "00000/000000001.json",
                br#"{"caption": "a dog", "split": "eval"}"#.to_vec(),
            ),
            ("00000/000000002.jpeg", jpeg_magic()),
            ("00000/000000002.cls", b"3".to_vec()),
            ("00000/000000002.txt", "café ☕".as_bytes().to_vec()),
        ],
    );
    let got = read_all(&shard).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].caption, "a red car");
    assert_eq!(got[0].id, "00000/000000000");
    assert_eq!(got[0].split, None);
    assert_eq!(got[1].caption, "a dog");
    assert_eq!(got[1].split, Some(Split::Eval));
    assert_eq!(got[1].image, png(1));
    assert_eq!(got[2].caption, "café ☕");
}

#[test]
fn webdataset_roundtrip_and_folder_of_shards() {
    let dir = tempfile::tempdir().unwrap();
    let a = vec![
        sample("1f600.google", "grinning face", Some(Split::Train)),
        sample("plain", "no json needed", None),
    ];
    let b = vec![sample("1f600.twitter", "grinning face", Some(Split::Eval))];
    for (name, samples) in [("shard-000001.tar", &b), ("shard-000000.tar", &a)] {
        let mut w = webdataset::ShardWriter::create(&dir.path().join(name)).unwrap();
        for s in samples {
            w.append(s).unwrap();
        }
        assert_eq!(w.len(), samples.len() as u64);
        w.finish().unwrap();
    }
    // Shards are read in file-name order; ids with dots survive through key.json.
    let got = read_all(dir.path()).unwrap();
    let want: Vec<DatasetSample> = a.iter().chain(&b).cloned().collect();
    assert_eq!(got, want);
    let source = detect(dir.path()).unwrap();
    let sum = summarize(&source).unwrap();
    assert_eq!(
        (sum.samples, sum.train, sum.eval, sum.unspecified),
        (3, 1, 1, 1)
    );
    let err = sum.explicit_splits(dir.path()).unwrap_err().to_string();
    assert!(err.contains("either all or none"), "{err}");
}

#[test]
fn webdataset_writer_rejects_duplicate_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = webdataset::ShardWriter::create(&dir.path().join("s.tar")).unwrap();
    w.append(&sample("a.b", "x", None)).unwrap();
    let err = w.append(&sample("a_b", "y", None)).unwrap_err().to_string();
    assert!(err.contains("duplicate key"), "{err}");
}

#[test]
fn webdataset_truncated_tar_names_shard_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("broken.tar");
    let big: Vec<u8> = png(9).into_iter().chain(vec![7u8; 4000]).collect();
    tar_of(
        &shard,
        &[
            ("k1.png", png(1)),
            ("k1.txt", b"one".to_vec()),
            ("k2.png", big),
            ("k2.txt", b"two".to_vec()),
        ],
    );
    let bytes = std::fs::read(&shard).unwrap();
    // Cut inside k2.png's data: header blocks of k1.png, k1.txt, k2.png come first.
    std::fs::write(&shard, &bytes[..512 * 6 + 1000]).unwrap();
    let err = err_of(&shard);
    assert!(err.contains("broken.tar"), "{err}");
    assert!(err.contains("truncated"), "{err}");
    assert!(err.contains("k2"), "{err}");
}

#[test]
fn webdataset_garbage_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("junk.tar");
    std::fs::write(&shard, vec![0x41u8; 1500]).unwrap();
    let err = err_of(&shard);
    assert!(err.contains("junk.tar") && err.contains("corrupt"), "{err}");
}

/// (shard name, entries, key named in the error, problem named in the error)
type Case<'a> = (&'a str, Vec<(&'a str, Vec<u8>)>, &'a str, &'a str);

#[test]
fn webdataset_malformed_samples() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<Case> = vec![
        (
            "no-caption.tar",
            vec![
                ("a.png", png(1)),
                ("a.txt", b"ok".to_vec()),
                ("b.png", png(2)),
            ],
            "'b'",
            "has an image but no caption",
        ),
        (
            "no-image.tar",
            vec![
                ("a.txt", b"lonely caption".to_vec()),
                ("b.png", png(2)),
                ("b.txt", b"x".to_vec()),
            ],
            "'a'",
            "has a caption but no image",
        ),
        (
            "webp.tar",
            vec![("a.webp", b"RIFF".to_vec()), ("a.txt", b"x".to_vec())],
            "'a'",
            "found .webp, which is not supported",
        ),
        (
            "utf8.tar",
            vec![("a.png", png(1)), ("a.txt", vec![b'o', b'k', 0xFF, 0xFE])],
            "'a'",
            "not valid UTF-8 (byte 2)",
        ),
        (
            "split.tar",
            vec![
                ("a.png", png(1)),
                ("a.json", br#"{"caption":"x","split":"test"}"#.to_vec()),
            ],
            "'a'",
            "unknown split \"test\"",
        ),
        (
            "bad-json.tar",
            vec![("a.png", png(1)), ("a.json", b"{caption".to_vec())],
            "'a'",
            "a.json is not valid JSON",
        ),
        (
            "repeat.tar",
            vec![
                ("a.png", png(1)),
                ("a.txt", b"x".to_vec()),
                ("b.png", png(2)),
                ("b.txt", b"y".to_vec()),
                ("a.json", b"{}".to_vec()),
            ],
            "'a'",
            "must be adjacent",
        ),
        (
            "two-images.tar",
            vec![
                ("a.png", png(1)),
                ("a.jpg", jpeg_magic()),
                ("a.txt", b"x".to_vec()),
            ],
            "'a'",
            "two images",
        ),
        (
            "not-image.tar",
            vec![("a.png", b"hello".to_vec()), ("a.txt", b"x".to_vec())],
            "'a'",
            "not a PNG or JPEG",
        ),
        (
            "empty-caption.tar",
            vec![("a.png", png(1)), ("a.txt", b"  \n".to_vec())],
            "'a'",
            "caption is empty",
        ),
    ];
    for (name, entries, key, problem) in cases {
        let shard = dir.path().join(name);
        tar_of(&shard, &entries);
        let err = err_of(&shard);
        assert!(err.contains(name), "{name}: {err}");
        assert!(err.contains(key), "{name}: {err}");
        assert!(err.contains(problem), "{name}: {err}");
    }
}

#[test]
fn empty_inputs_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = err_of(dir.path());
    assert!(err.contains("no .tar shards"), "{err}");
    let shard = dir.path().join("empty.tar");
    tar_of(&shard, &[]);
    assert!(err_of(&shard).contains("no samples"));
    let other = dir.path().join("data.csv");
    std::fs::write(&other, "x").unwrap();
    assert!(err_of(&other).contains("not a dataset"));
}

fn write_manifest(dir: &Path, lines: &[String]) -> PathBuf {
    let path = dir.join("m.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

#[test]
fn jsonl_reads_relative_and_absolute_paths() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("img")).unwrap();
    std::fs::write(dir.path().join("img/a.png"), png(1)).unwrap();
    let abs = dir.path().join("b.jpg");
    std::fs::write(&abs, jpeg_magic()).unwrap();
    let lines = vec![
        r#"{"image": "img/a.png", "caption": "first", "split": "train", "id": "x1"}"#.into(),
        String::new(),
        format!(
            r#"{{"image": {:?}, "caption": " second ", "split": "eval"}}"#,
            abs
        ),
    ];
    // Read from another working directory: paths resolve against the manifest's folder.
    let got = read_all(&write_manifest(dir.path(), &lines)).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].id.as_str(), got[0].split),
        ("x1", Some(Split::Train))
    );
    assert_eq!(got[0].image, png(1));
    assert_eq!(
        (got[1].id.as_str(), got[1].caption.as_str()),
        ("line-3", "second")
    );
    // A folder holding just the manifest is accepted too.
    assert_eq!(read_all(dir.path()).unwrap(), got);
}

#[test]
fn jsonl_errors_name_line_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.png"), png(1)).unwrap();
    let ok = r#"{"image": "a.png", "caption": "fine"}"#.to_string();
    let cases = [
        (r#"{"image": "a.png", "caption": "#, ":2: invalid JSON"),
        (r#"{"image": "a.png"}"#, ":2: missing field \"caption\""),
        (r#"{"caption": "x"}"#, ":2: missing field \"image\""),
        (
            r#"{"image": "a.png", "caption": 5}"#,
            ":2: field \"caption\" must be a string",
        ),
        (
            r#"{"image": "nope.png", "caption": "x"}"#,
            "nope.png not found",
        ),
        (
            r#"{"image": "a.png", "caption": "x", "split": "val"}"#,
            ":2: unknown split \"val\" (expected \"train\" or \"eval\")",
        ),
        (r#"[1, 2]"#, ":2: expected a JSON object"),
        (
            r#"{"image": "a.png", "caption": "x", "id": "line-1"}"#,
            ":2: duplicate id",
        ),
    ];
    for (line, want) in cases {
        let path = write_manifest(dir.path(), &[ok.clone(), line.to_string()]);
        let err = err_of(&path);
        assert!(err.contains("m.jsonl"), "{err}");
        assert!(err.contains(want), "want {want:?} in {err}");
    }
}

#[test]
fn jsonl_writer_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let samples = vec![
        sample("1f600.google", "grinning face", Some(Split::Train)),
        DatasetSample {
            image: jpeg_magic(),
            ..sample("1f600.twitter", "grinning face", Some(Split::Eval))
        },
    ];
    let mut w = jsonl::JsonlWriter::create(dir.path(), "samples.jsonl").unwrap();
    for s in &samples {
        w.append(s).unwrap();
    }
    let manifest = w.finish().unwrap();
    assert!(dir.path().join("images/1f600_twitter.jpg").exists());
    assert_eq!(read_all(&manifest).unwrap(), samples);
    let sum = summarize(&detect(dir.path()).unwrap()).unwrap();
    assert!(sum.explicit_splits(dir.path()).unwrap());
}

#[test]
fn visit_stops_early() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = webdataset::ShardWriter::create(&dir.path().join("s.tar")).unwrap();
    for i in 0..5 {
        w.append(&sample(&format!("k{i}"), "c", None)).unwrap();
    }
    w.finish().unwrap();
    let mut n = 0;
    visit(&detect(dir.path()).unwrap(), &mut |_| {
        n += 1;
        if n == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(n, 2);
}

#[test]
fn helpers() {
    assert_eq!(image_extension(&png(0)), Some("png"));
    assert_eq!(image_extension(&jpeg_magic()), Some("jpg"));
    assert_eq!(image_extension(b"GIF89a"), None);
    assert_eq!(safe_stem("1f600.google/x y"), "1f600_google_x_y");
    assert_eq!(Split::parse("eval"), Some(Split::Eval));
    assert_eq!(Split::parse("Eval"), None);
}
