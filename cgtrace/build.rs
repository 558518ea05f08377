//! Builds the eBPF programs (cgtrace-ebpf, for the bpf target, with the nightly toolchain and
//! bpf-linker) so `src/probes.rs` can embed the object with `include_bytes_aligned!`.
fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.join("cgtrace-ebpf"))
        .ok_or_else(|| anyhow::anyhow!("cgtrace has no parent directory"))?;
    let root_dir = root
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", root.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "cgtrace-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
