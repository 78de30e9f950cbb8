//! EmojiCL on the real installed npm packages. These tests fail (never skip) when the
//! assets are missing, naming the setup script, because a silently skipped benchmark test
//! hides a broken setup.
use std::collections::HashSet;
use std::path::PathBuf;

use super::*;
use crate::{read_all, Split};

fn assets() -> PathBuf {
    let dir = default_node_modules();
    assert!(
        dir.join("emoji-datasource-google/emoji.json").exists()
            && dir.join("emoji-datasource-twitter/img/twitter/64").is_dir()
            && dir.join("emojibase-data/en/data.json").exists()
            && dir.join("emojilib/dist/emoji-en-US.json").exists(),
        "EmojiCL assets missing in {}: run scripts/setup-data.sh (the README's test command does)",
        dir.display()
    );
    dir
}

#[test]
fn builds_nine_tasks_matching_the_documented_sizes() {
    let tasks = build(&assets(), &Options::default()).unwrap();
    // docs/data.md, "EmojiCL": base emoji per category, and People & Body with skin variants.
    let base = [169, 386, 159, 131, 218, 85, 264, 224, 270];
    let train = [169, 2261, 159, 131, 218, 85, 264, 224, 270];
    assert_eq!(tasks.len(), 9);
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(t.index, i);
        assert_eq!(t.name, CATEGORIES[i]);
        // "≈": allow a few entries of drift between package releases.
        let near = |got: usize, want: usize| got.abs_diff(want) <= want / 50 + 2;
        assert!(
            near(t.eval.len(), base[i]),
            "{}: {} eval",
            t.name,
            t.eval.len()
        );
        assert!(
            near(t.train.len(), train[i]),
            "{}: {} train",
            t.name,
            t.train.len()
        );
        let mut ids = HashSet::new();
        for s in t.train.iter().chain(&t.eval) {
            assert!(
                s.image.is_file(),
                "{}: missing {}",
                t.name,
                s.image.display()
            );
            assert!(
                !s.caption.trim().is_empty(),
                "{}: empty caption for {}",
                t.name,
                s.id
            );
            assert!(
                ids.insert(s.id.clone()),
                "{}: duplicate id {}",
                t.name,
                s.id
            );
        }
        assert!(t
            .train
            .iter()
            .all(|s| s.split == Split::Train
                && s.image.to_string_lossy().contains("/img/google/64/")));
        assert!(t
            .eval
            .iter()
            .all(|s| s.split == Split::Eval
                && s.image.to_string_lossy().contains("/img/twitter/64/")));
    }
    assert_eq!(tasks[3].slug, "food-drink");
    // Eval captions are CLDR labels, e.g. the grinning face.
    let grin = tasks[0]
        .eval
        .iter()
        .find(|s| s.id == "1f600.twitter")
        .unwrap();
    assert_eq!(grin.caption, "grinning face");
    // Skin variants carry their own labels.
    let skin = tasks[1]
        .train
        .iter()
        .find(|s| s.id == "1f44b-1f3fb.google")
        .unwrap();
    assert!(skin.caption.contains("light skin tone"), "{}", skin.caption);
}

#[test]
fn caps_subsets_and_determinism() {
    let dir = assets();
    let opts = Options {
        tasks: vec![1, 8],
        max_train: Some(40),
        max_eval: Some(10),
        max_skin_variants: Some(1),
        captions_per_image: 2,
        seed: 11,
        anchor_per_category: 0,
    };
    let a = build(&dir, &opts).unwrap();
    assert_eq!(a, build(&dir, &opts).unwrap(), "same seed, same tasks");
    assert_eq!(a.iter().map(|t| t.index).collect::<Vec<_>>(), vec![1, 8]);
    for t in &a {
        assert_eq!(t.train.len(), 40);
        assert_eq!(t.eval.len(), 10);
        // Every evaluated concept is trained on (eval takes a prefix of the train order).
        let trained: HashSet<String> = t
            .train
            .iter()
            .map(|s| s.id.split('.').next().unwrap().to_string())
            .collect();
        for e in &t.eval {
            assert!(
                trained.contains(e.id.split('.').next().unwrap()),
                "{}",
                e.id
            );
        }
    }
    // A task's content does not depend on which other tasks are exported.
    let alone = build(
        &dir,
        &Options {
            tasks: vec![8],
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!(alone[0], a[1]);
    let other_seed = build(&dir, &Options { seed: 12, ..opts }).unwrap();
    assert_ne!(other_seed[1].eval, a[1].eval);
    let err = build(
        &dir,
        &Options {
            tasks: vec![9],
            ..Options::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("task 9 does not exist"), "{err}");
}

#[test]
fn export_writes_readable_datasets_and_index() {
    let dir = assets();
    let out = tempfile::tempdir().unwrap();
    let opts = Options {
        tasks: vec![0, 3],
        max_train: Some(6),
        max_eval: Some(4),
        ..Options::default()
    };
    for format in [ExportFormat::WebDataset, ExportFormat::Jsonl] {
        let root = out.path().join(format!("{format:?}"));
        let mut seen = Vec::new();
        let index = export(&dir, &root, format, &opts, &mut |t| seen.push(t.index)).unwrap();
        assert_eq!(seen, vec![0, 3]);
        let on_disk: Index =
            serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
        assert_eq!(on_disk, index);
        assert_eq!(index.tasks[1].path, "03-food-drink");
        for t in &index.tasks {
            let samples = read_all(&root.join(&t.path)).unwrap();
            let eval = samples
                .iter()
                .filter(|s| s.split == Some(Split::Eval))
                .count();
            assert_eq!((samples.len(), eval), (t.n_train + t.n_eval, 4));
            assert!(samples.iter().all(|s| s.image.starts_with(b"\x89PNG")));
        }
    }
}

#[test]
fn anchor_slice_is_held_out_of_every_task_and_fixed() {
    let dir = assets();
    let opts = Options {
        anchor_per_category: 4,
        ..Options::default()
    };
    let held = anchor(&dir, &opts).unwrap();
    assert_eq!(held.len(), 4 * CATEGORIES.len());
    assert!(held.iter().all(|s| s.split == Split::Eval
        && s.image.is_file()
        && s.image.to_string_lossy().contains("/img/twitter/64/")));
    let ids: HashSet<&str> = held.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), held.len(), "unique ids");
    // No task trains or evaluates on a held-out emoji.
    let tasks = build(&dir, &opts).unwrap();
    let plain = build(&dir, &Options::default()).unwrap();
    for (t, p) in tasks.iter().zip(&plain) {
        for s in t.train.iter().chain(&t.eval) {
            let unified = s.id.split('.').next().unwrap();
            assert!(
                !ids.contains(format!("{unified}.twitter").as_str()),
                "{}: {} is held out",
                t.name,
                s.id
            );
        }
        // Exactly the held-out emoji are gone from eval.
        let gone: Vec<&SampleRef> = p
            .eval
            .iter()
            .filter(|s| !t.eval.iter().any(|e| e.id == s.id))
            .collect();
        assert_eq!(gone.len(), 4, "{}", t.name);
        assert!(gone.iter().all(|s| ids.contains(s.id.as_str())));
        assert!(t.train.len() < p.train.len());
    }
    // Nor on a skin variant of a held-out emoji (People & Body has them).
    let catalog = catalog::load(&dir).unwrap();
    let trained: HashSet<String> = tasks
        .iter()
        .flat_map(|t| &t.train)
        .map(|s| s.id.split('.').next().unwrap().to_string())
        .collect();
    let mut variants = 0;
    for e in catalog
        .iter()
        .filter(|e| ids.contains(format!("{}.twitter", e.unified.to_lowercase()).as_str()))
    {
        for skin in &e.skins {
            variants += 1;
            assert!(
                !trained.contains(&skin.unified.to_lowercase()),
                "{} is a variant of a held-out emoji",
                skin.unified
            );
        }
    }
    assert_eq!(
        plain.iter().map(|t| t.train.len()).sum::<usize>()
            - tasks.iter().map(|t| t.train.len()).sum::<usize>(),
        held.len() + variants,
        "exactly the held-out emoji and their variants leave training"
    );
    // Fixed: the same for every seed and whichever tasks are built.
    let other = Options {
        seed: 5,
        tasks: vec![2],
        ..opts.clone()
    };
    assert_eq!(anchor(&dir, &other).unwrap(), held);
    let t2 = build(&dir, &other).unwrap();
    assert!(t2[0].eval.iter().all(|s| !ids.contains(s.id.as_str())));
    // 0 = no slice (the default build, whose sizes the first test pins); too large a slice is
    // refused.
    assert!(anchor(&dir, &Options::default()).unwrap().is_empty());
    let err = build(
        &dir,
        &Options {
            anchor_per_category: 43,
            ..Options::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("more than half"), "{err}");
}

#[test]
fn export_writes_the_anchor_folder() {
    let dir = assets();
    let out = tempfile::tempdir().unwrap();
    let opts = Options {
        tasks: vec![5],
        max_train: Some(6),
        max_eval: Some(4),
        anchor_per_category: 2,
        ..Options::default()
    };
    let index = export(
        &dir,
        out.path(),
        ExportFormat::WebDataset,
        &opts,
        &mut |_| {},
    )
    .unwrap();
    let a = index.anchor.clone().expect("anchor in the index");
    assert_eq!(
        (a.path.as_str(), a.per_category, a.n_samples),
        ("anchor", 2, 18)
    );
    let samples = read_all(&out.path().join("anchor")).unwrap();
    assert_eq!(samples.len(), 18);
    assert!(samples.iter().all(|s| s.split == Some(Split::Eval)));
    // Without a slice the index has no `anchor` key (old index files stay as they were).
    let plain = export(
        &dir,
        &out.path().join("plain"),
        ExportFormat::Jsonl,
        &Options {
            anchor_per_category: 0,
            ..opts
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(plain.anchor.is_none());
    let text = std::fs::read_to_string(out.path().join("plain/index.json")).unwrap();
    assert!(!text.contains("anchor"), "{text}");
    assert!(!out.path().join("plain/anchor").exists());
}

#[test]
fn missing_assets_error_names_the_setup_script() {
    let empty = tempfile::tempdir().unwrap();
    let err = build(empty.path(), &Options::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("scripts/setup-data.sh"), "{err}");
}
