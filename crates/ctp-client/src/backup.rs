//! `ctpctl backup --to PATH`: the daemon writes a consistent snapshot of its database and
//! files into PATH, a directory on the daemon's host (not this one); `ctpd restore` makes a
//! data dir from it.
use serde_json::json;

use super::args::BackupArgs;
use super::conn::Client;
use super::error::{CliError, CliResult};
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
