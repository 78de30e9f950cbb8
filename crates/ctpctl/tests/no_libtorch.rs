//! The built `ctpctl` must run on a host without torch: nothing of libtorch, c10 or CUDA is
//! NEEDED in its dynamic section, and no rpath/runpath points at a torch install. (Issue #11:
//! the single-crate ctpctl linked libtorch_cpu.so and libcudart.so.13 and carried an rpath into
//! ~/.cache/ctp/venv.) The ELF is read here directly, so the test needs no readelf.
#![cfg(target_os = "linux")]

use std::path::Path;

/// Libraries a torch build brings in; none may be NEEDED by the client.
const FORBIDDEN: &[&str] = &[
    "torch", "c10", "cudart", "cublas", "cudnn", "nvrtc", "nccl", "cuda", "gomp", "sqlite",
];

#[test]
fn ctpctl_links_no_libtorch() {
    let bin = Path::new(env!("CARGO_BIN_EXE_ctpctl"));
    let bytes = std::fs::read(bin).expect("reading the ctpctl binary");
    let dynamic = parse_dynamic(&bytes).expect("ctpctl is a dynamically linked ELF64 file");
    assert!(
        dynamic.needed.iter().any(|l| l.starts_with("libc.so")),
        "the parser found no libc in NEEDED: {:?}",
        dynamic.needed
    );
    let bad: Vec<&String> = dynamic
        .needed
        .iter()
        .filter(|l| FORBIDDEN.iter().any(|f| l.contains(f)))
        .collect();
    assert!(
        bad.is_empty(),
        "ctpctl NEEDS {bad:?} (all: {:?})",
        dynamic.needed
    );
    for path in &dynamic.rpaths {
        let lower = path.to_lowercase();
        assert!(
            !["torch", "venv", "site-packages", "cuda"]
                .iter()
                .any(|w| lower.contains(w)),
            "ctpctl carries an rpath/runpath into a torch install: {path}"
        );
    }
}

/// The dependency graph says the same before anything links: no tch, torch-sys or sqlx
/// anywhere below ctpctl (normal and build dependencies).
#[test]
fn ctpctl_depends_on_no_tch_and_no_sqlx() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            "ctpctl",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tree.lines().any(|l| l.starts_with("ctp-client ")), "{tree}");
    let bad: Vec<&str> = tree
        .lines()
        .filter(|l| {
            ["tch ", "torch-sys ", "sqlx", "libsqlite3-sys "]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    assert!(bad.is_empty(), "ctpctl depends on {bad:?}");
}

#[test]
fn the_parser_sees_a_forbidden_library() {
    // A minimal ELF64 with a dynamic section NEEDing libtorch_cpu.so and an rpath: the check
    // above would reject it (guards against a parser that silently finds nothing).
    let elf = tiny_elf(&["libc.so.6", "libtorch_cpu.so"], "/venv/lib/torch/lib");
    let d = parse_dynamic(&elf).unwrap();
    assert_eq!(d.needed, ["libc.so.6", "libtorch_cpu.so"]);
    assert_eq!(d.rpaths, ["/venv/lib/torch/lib"]);
}

#[derive(Debug, Default)]
struct Dynamic {
    needed: Vec<String>,
    /// DT_RPATH and DT_RUNPATH entries.
    rpaths: Vec<String>,
}

const SHT_DYNAMIC: u32 = 6;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// Section `i`'s (type, offset, size, link).
fn section(
    b: &[u8],
    shoff: usize,
    shentsize: usize,
    i: usize,
) -> Option<(u32, usize, usize, usize)> {
    let s = shoff + i * shentsize;
    Some((
        u32_at(b, s + 4)?,
        u64_at(b, s + 24)? as usize,
        u64_at(b, s + 32)? as usize,
        u32_at(b, s + 40)? as usize,
    ))
}

/// NEEDED and rpath entries of a little-endian ELF64 file (x86_64, aarch64).
fn parse_dynamic(b: &[u8]) -> Option<Dynamic> {
    if b.get(..4)? != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return None;
    }
    let shoff = u64_at(b, 0x28)? as usize;
    let shentsize = u16_at(b, 0x3a)? as usize;
    let shnum = u16_at(b, 0x3c)? as usize;
    let (_, dyn_off, dyn_size, link) = (0..shnum)
        .filter_map(|i| section(b, shoff, shentsize, i))
        .find(|s| s.0 == SHT_DYNAMIC)?;
    let (_, str_off, str_size, _) = section(b, shoff, shentsize, link)?;
    let strtab = b.get(str_off..str_off + str_size)?;
    let string = |at: u64| -> Option<String> {
        let s = strtab.get(at as usize..)?;
        let end = s.iter().position(|&c| c == 0)?;
        Some(String::from_utf8_lossy(&s[..end]).into_owned())
    };
    let mut out = Dynamic::default();
    for e in (dyn_off..dyn_off + dyn_size).step_by(16) {
        let (tag, val) = (u64_at(b, e)?, u64_at(b, e + 8)?);
        match tag {
            DT_NULL => break,
            DT_NEEDED => out.needed.push(string(val)?),
            DT_RPATH | DT_RUNPATH => out.rpaths.push(string(val)?),
            _ => {}
        }
    }
    Some(out)
}

/// Just enough ELF64 for [`parse_dynamic`]: header, a .dynstr, a .dynamic, section headers.
fn tiny_elf(needed: &[&str], rpath: &str) -> Vec<u8> {
    let mut strtab = vec![0u8];
    let mut add = |s: &str| {
        let at = strtab.len() as u64;
        strtab.extend_from_slice(s.as_bytes());
        strtab.push(0);
        at
    };
    let mut entries: Vec<(u64, u64)> = needed.iter().map(|n| (DT_NEEDED, add(n))).collect();
    entries.push((DT_RUNPATH, add(rpath)));
    entries.push((DT_NULL, 0));
    let str_off = 64usize;
    let dyn_off = str_off + strtab.len();
    let dyn_size = entries.len() * 16;
    let shoff = dyn_off + dyn_size;
    let mut b = vec![0u8; shoff + 3 * 64];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
    b[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    b[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
    b[str_off..dyn_off].copy_from_slice(&strtab);
    for (i, (tag, val)) in entries.iter().enumerate() {
        let e = dyn_off + i * 16;
        b[e..e + 8].copy_from_slice(&tag.to_le_bytes());
        b[e + 8..e + 16].copy_from_slice(&val.to_le_bytes());
    }
    // Section 0 is null; 1 = .dynstr (type 3); 2 = .dynamic linked to 1.
    let sections = [
        (3u32, str_off, strtab.len(), 0u32),
        (SHT_DYNAMIC, dyn_off, dyn_size, 1),
    ];
    for (i, (ty, off, size, link)) in sections.into_iter().enumerate() {
        let s = shoff + (i + 1) * 64;
        b[s + 4..s + 8].copy_from_slice(&ty.to_le_bytes());
        b[s + 24..s + 32].copy_from_slice(&(off as u64).to_le_bytes());
        b[s + 32..s + 40].copy_from_slice(&(size as u64).to_le_bytes());
        b[s + 40..s + 44].copy_from_slice(&link.to_le_bytes());
    }
    b
}
