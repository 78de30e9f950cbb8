//! Operator commands that run on the daemon's host: `ctpctl backup --to PATH` (the daemon writes
//! a consistent snapshot of its database and files into PATH, a directory on its host, not
//! this one; `ctpd restore` makes a data dir from it) and `ctpctl verify` (its own check).
use serde_json::json;

use super::args::{BackupArgs, VerifyArgs};
use super::conn::Client;
use super::error::{CliError, CliResult, EXIT_OK, EXIT_UNSOUND};
use super::output::{print_json, time};
use ctp_api::pb;

pub async fn backup(client: &mut Client, a: &BackupArgs, json: bool) -> CliResult {
    // The path is on the daemon's host, so it is sent as written; only a relative one is
    // surely wrong (the daemon would refuse it too).
    if !a.to.starts_with('/') {
        return Err(CliError::local(format!(
            "--to {:?} is not an absolute path; name a directory on the daemon's host",
            a.to
        )));
    }
    let r = client
        .backup(pb::BackupRequest { path: a.to.clone() })
        .await?
        .into_inner();
    if json {
        print_json(&json!({
            "path": r.path,
            "files": r.files,
            "bytes": r.bytes,
            "schema_version": r.schema_version,
            "created_at": time(&r.created_at),
            "database_sha256": r.database_sha256,
        }));
    } else {
        println!("{}", describe(&r));
    }
    Ok(())
}

/// One line for people.
pub fn describe(r: &pb::BackupResponse) -> String {
    format!(
        "backup of {} written to {} on the daemon's host: the database and {} files, {} bytes \
         (schema version {}); restore with `ctpd restore --from {} --data-dir NEW`",
        time(&r.created_at),
        r.path,
        r.files,
        r.bytes,
        r.schema_version,
        r.path
    )
}

/// `ctpctl verify [--load-weights]`: the running daemon's own check; exit 6 on problems.
pub async fn verify(client: &mut Client, a: &VerifyArgs, json: bool) -> CliResult<u8> {
    let r = client
        .verify(pb::VerifyRequest {
            load_weights: a.load_weights,
        })
        .await?
        .into_inner();
    if json {
        print_json(&json!({
            "sound": r.sound,
            "models": r.models,
            "versions": r.versions,
            "tasks": r.tasks,
            "resume_points": r.resume_points,
            "loaded_weights": r.loaded_weights,
            "problems": r.problems,
            "unreferenced": r.unreferenced,
            "temp_files": r.temp_files,
        }));
    } else {
        print!("{}", verify_summary(&r));
    }
    Ok(if r.sound { EXIT_OK } else { EXIT_UNSOUND })
}

/// The same lines as `ctpd verify` prints.
pub fn verify_summary(r: &pb::VerifyReport) -> String {
    let mut s = format!(
        "checked {} models, {} versions, {} tasks, {} resume points{}: {}\n",
        r.models,
        r.versions,
        r.tasks,
        r.resume_points,
        if r.loaded_weights {
            " (weights loaded)"
        } else {
            ""
        },
        if r.sound {
            "sound".to_string()
        } else {
            format!("{} problems", r.problems.len())
        }
    );
    for (label, items) in [
        ("problem", &r.problems),
        ("unreferenced", &r.unreferenced),
        ("temp file", &r.temp_files),
    ] {
        for i in items {
            s.push_str(&format!("{label}: {i}\n"));
        }
    }
    s
}
