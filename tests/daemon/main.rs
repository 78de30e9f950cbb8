//! Integration tests that start `ctpd`: in-process (`Application` on port 0) or as separate
//! processes, driven through the generated gRPC client, `ctpctl`, the Python client or a
//! browser, on SQLite and on a real Postgres started by the test itself. One test binary
//! (each links libtorch; see docs/results.md, "Build and test time").
mod anchors;
mod backup;
mod bad_input;
mod by_reference;
mod crash;
mod ctpctl;
mod dashboard;
mod disk_full;
mod export;
mod export_presets;
mod flow;
mod gate_replay;
mod helpers;
mod k8s_manifest;
mod limits;
// The S3 test server (moto), shared with ctp-storage's tests.
#[path = "../../crates/ctp-storage/tests/support/moto.rs"]
mod moto;
mod objects;
mod ownership;
mod pg_daemons;
mod python_client;
mod reliability;
mod scheduling;
mod service;
mod tls;
mod upgrade;
mod verify;
mod webhooks;
