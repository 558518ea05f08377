//! Hands the committed eBPF object (`ebpf/cgtrace.bpf.o`, built from cgtrace-ebpf by `cargo xtask
//! build-ebpf`) to `src/probes` (`include_bytes_aligned!` from OUT_DIR), and its source hash (from
//! `ebpf/cgtrace.bpf.o.inputs`) to the code as `CGTRACE_EBPF_SOURCE_HASH`. Building cgtrace needs
//! only the stable toolchain: no nightly, rust-src, LLVM or bpf-linker.
use std::{env, fs, path::PathBuf};

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ebpf");
    let object = dir.join("cgtrace.bpf.o");
    let inputs = dir.join("cgtrace.bpf.o.inputs");
    println!("cargo:rerun-if-changed={}", object.display());
    println!("cargo:rerun-if-changed={}", inputs.display());
    let out = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    fs::copy(&object, out.join("cgtrace")).with_context(|| {
        format!(
            "copying the committed eBPF object {}; rebuild it with `cargo xtask build-ebpf`",
            object.display()
        )
    })?;
    let list =
        fs::read_to_string(&inputs).with_context(|| format!("reading {}", inputs.display()))?;
    let hash = list
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("source-hash "))
        .with_context(|| format!("{} has no source-hash line", inputs.display()))?;
    println!("cargo:rustc-env=CGTRACE_EBPF_SOURCE_HASH={hash}");
    Ok(())
}
