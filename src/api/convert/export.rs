//! `ExportVersion`'s manifest on the wire.
use ctp_api::pb;

use crate::export::Export;

/// The first message of an export stream: every file with its size and sha256.
pub fn manifest_to_pb(e: &Export) -> pb::ExportManifest {
    pb::ExportManifest {
        model: e.model.clone(),
        version: e.version,
        preset: e.preset.clone(),
        files: e
            .files
            .iter()
            .map(|f| pb::ExportFile {
                name: f.name.into(),
                size: f.size,
                sha256: f.sha256.clone(),
                description: f.description.into(),
            })
            .collect(),
        probe_source: e.probe_source.into(),
    }
}
