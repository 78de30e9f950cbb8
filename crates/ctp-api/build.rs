//! Compiles the gRPC API from the repository's `proto/` (two levels up) into the tonic client
//! and server, plus a descriptor set for reflection.
//!
//! protoc comes from `protoc-bin-vendored`, so building needs no system protoc, and its
//! bundled include folder provides `google/protobuf/timestamp.proto`.
use std::{env, path::PathBuf};

/// The API, relative to this crate; every file listed here is compiled and watched.
const PROTOS: &[&str] = &["../../proto/ctp/v1/ctp.proto"];
const INCLUDE: &str = "../../proto";

fn main() {
    compile_protos().expect("compiling proto/ctp/v1/ctp.proto failed");
}

/// Generates the client and server and `OUT_DIR/ctp_descriptor.bin` (embedded as
/// `pb::FILE_DESCRIPTOR_SET`).
fn compile_protos() -> std::io::Result<()> {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc is missing");
    // Edition 2021: `set_var` is safe here, and build scripts are single-threaded.
    env::set_var("PROTOC", protoc);
    let well_known = protoc_bin_vendored::include_path().expect("vendored protoc includes");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let protos: Vec<PathBuf> = PROTOS.iter().map(PathBuf::from).collect();
    let includes = [PathBuf::from(INCLUDE), well_known];
    tonic_prost_build::configure()
        // Decode errors (e.g. invalid UTF-8 in a string) answer INVALID_ARGUMENT.
        .codec_path("crate::codec::StrictCodec")
        .file_descriptor_set_path(out_dir.join("ctp_descriptor.bin"))
        .compile_protos(&protos, &includes)
}
