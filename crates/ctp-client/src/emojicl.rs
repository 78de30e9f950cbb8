//! `ctpctl emojicl export`: writes the EmojiCL benchmark as ordinary datasets. Works
//! offline; no daemon involved.
use serde_json::json;

use super::args::{EmojiclExportArgs, FormatArg};
use super::error::{CliError, CliResult};
use super::output::print_json;
use ctp_datasets::emojicl::{self, ExportFormat, Options};

/// Turns the flags into builder options (empty `--tasks` = all nine, in order).
pub fn options(args: &EmojiclExportArgs) -> CliResult<Options> {
    let tasks = if args.tasks.is_empty() {
        (0..emojicl::CATEGORIES.len()).collect()
    } else {
        args.tasks.clone()
    };
    if let Some(bad) = tasks.iter().find(|&&t| t >= emojicl::CATEGORIES.len()) {
        return Err(CliError::local(format!(
            "--tasks: {bad} is not a task (0..=8: {})",
            emojicl::CATEGORIES.join(", ")
        )));
    }
    if args.captions_per_image == 0 {
        return Err(CliError::local("--captions-per-image must be at least 1"));
    }
    Ok(Options {
        tasks,
        max_train: args.max_train,
        max_eval: args.max_eval,
        max_skin_variants: args.max_skin_variants,
        captions_per_image: args.captions_per_image,
        seed: args.seed,
        anchor_per_category: args.anchor_per_category,
    })
}

/// Runs the export and prints the index (JSON) or a line per task.
pub fn export(args: &EmojiclExportArgs, json: bool) -> CliResult {
    let opts = options(args)?;
    let node_modules = args
        .node_modules
        .clone()
        .unwrap_or_else(emojicl::default_node_modules);
    let format = match args.format {
        FormatArg::Webdataset => ExportFormat::WebDataset,
        FormatArg::Jsonl => ExportFormat::Jsonl,
    };
    let index = emojicl::export(&node_modules, &args.out, format, &opts, &mut |t| {
        if !json {
            eprintln!(
                "{:>2} {:<18} {:>5} train {:>4} eval  -> {}",
                t.index, t.name, t.n_train, t.n_eval, t.path
            );
        }
    })?;
    if let (Some(a), false) = (&index.anchor, json) {
        eprintln!(
            "   anchor suite       {:>5} held out ({} per category) -> {}",
            a.n_samples, a.per_category, a.path
        );
    }
    let index_path = args.out.join("index.json");
    if json {
        print_json(&json!({
            "index": index_path.display().to_string(),
            "tasks": serde_json::to_value(&index.tasks).expect("index serializes"),
            "anchor": serde_json::to_value(&index.anchor).expect("index serializes"),
        }));
    } else {
        println!("{}", index_path.display());
    }
    Ok(())
}
