//! The eBPF object is linked by `bpf-linker`, a binary cargo knows nothing about: rebuild when it
//! changes (e.g. after `cargo xtask setup` rebuilt it against another LLVM).
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}
