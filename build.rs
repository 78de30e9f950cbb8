//! Build script: embeds an rpath to torch's `lib/` so binaries and tests run without
//! LD_LIBRARY_PATH on the build machine, and links libtorch's CUDA libraries when torch ships
//! them. (The gRPC proto is compiled by `crates/ctp-api`.)
//!
//! `CTP_NO_RPATH=1` leaves the rpath out: a binary for other hosts, which finds libtorch
//! through `LD_LIBRARY_PATH` — the one documented way (docs/architecture.md, "Deploying ctpd";
//! deploy/Dockerfile builds so).
use std::{env, path::PathBuf, process::Command};

fn torch_lib_dir() -> Option<PathBuf> {
    if let Ok(dir) = env::var("LIBTORCH") {
        return Some(PathBuf::from(dir).join("lib"));
    }
    if let Ok(dir) = env::var("LIBTORCH_LIB") {
        return Some(PathBuf::from(dir).join("lib"));
    }
    let python = env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .args([
            "-c",
            "import torch,os;print(os.path.join(os.path.dirname(torch.__file__),'lib'))",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=PYTHON_SYS_EXECUTABLE");
    println!("cargo:rerun-if-env-changed=CTP_NO_RPATH");
    let rpath = env::var_os("CTP_NO_RPATH").is_none_or(|v| v.is_empty() || v == "0");
    if let Some(dir) = torch_lib_dir() {
        if rpath {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
        }
        link_cuda(&dir);
    }
    // `sqlx::migrate!` embeds the migration folders at compile time but does not watch
    // them for new files; this makes adding a migration rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
}

/// libtorch registers its CUDA backend from static initialisers in `libtorch_cuda.so`; no
/// symbol of it is referenced, so the linker's default `--as-needed` drops it and
/// `tch::Cuda::is_available()` is false even on a GPU machine. `--no-as-needed` around the two
/// CUDA libraries keeps them NEEDED. They load without a GPU or driver (CPU machines with a
/// CUDA build of torch run as before); a CPU-only torch has no such files and nothing changes.
fn link_cuda(dir: &std::path::Path) {
    let libs = ["torch_cuda", "c10_cuda"];
    if !libs.iter().all(|l| dir.join(format!("lib{l}.so")).exists()) {
        return;
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    for l in libs {
        println!("cargo:rustc-link-arg=-l{l}");
    }
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}
