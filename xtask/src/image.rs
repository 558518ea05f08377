//! `cargo xtask image`: an OCI image archive, `target/image/cgtrace-<version>.oci.tar`, built
//! here from nothing external: no base image (the static binary alone at
//! `/usr/local/bin/cgtrace`, no shell), no container daemon. umoci (Debian's package, installed
//! by `cargo xtask setup`) writes the OCI layout; the archive is that layout as a tar, what
//! `skopeo copy oci-archive:<file> docker://<registry>/cgtrace:<version>` pushes.
use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use crate::{
    dist::{self, VERSION},
    run, workspace_root,
};

/// The archive's path.
pub fn archive_path() -> PathBuf {
    workspace_root().join(format!("target/image/cgtrace-{VERSION}.oci.tar"))
}

/// `cargo xtask image`: builds the static binary (as `dist` does) and the image archive around
/// it; returns the archive's path.
pub fn run_image() -> Result<PathBuf> {
    let bin = dist::build_static_binary()?;
    let dir = workspace_root().join("target/image");
    let layout = dir.join("layout");
    if layout.exists() {
        fs::remove_dir_all(&layout)?;
    }
    fs::create_dir_all(&dir)?;
    let image = format!("{}:{VERSION}", layout.display());
    let umoci = || {
        let mut c = Command::new("umoci");
        c.current_dir(&dir);
        c
    };
    run(umoci().args(["init", "--layout"]).arg(&layout)).context("umoci (cargo xtask setup)")?;
    // An empty image: no base, no layer until the binary's.
    run(umoci().args(["new", "--image", &image]))?;
    // The binary, root-owned, mode 0755, alone in its layer.
    let staged = dir.join("rootfs/usr/local/bin");
    if dir.join("rootfs").exists() {
        fs::remove_dir_all(dir.join("rootfs"))?;
    }
    fs::create_dir_all(&staged)?;
    fs::copy(&bin, staged.join("cgtrace")).context("copying the binary")?;
    run(umoci()
        .args(["insert", "--image", &image])
        .arg(dir.join("rootfs"))
        .arg("/"))?;
    let (commit, _) = dist::source_commit();
    let source = env!("CARGO_PKG_REPOSITORY");
    run(umoci()
        .args(["config", "--image", &image, "--os", "linux"])
        .args(["--architecture", "amd64", "--config.user", "0:0"])
        .args(["--config.entrypoint", "/usr/local/bin/cgtrace"])
        .args(["--config.cmd", "attach"])
        .arg(format!(
            "--config.label=org.opencontainers.image.version={VERSION}"
        ))
        .arg(format!(
            "--config.label=org.opencontainers.image.revision={commit}"
        ))
        .arg(format!(
            "--config.label=org.opencontainers.image.source={source}"
        ))
        .arg("--config.label=org.opencontainers.image.title=cgtrace")
        .arg(format!(
            "--manifest.annotation=org.opencontainers.image.version={VERSION}"
        ))
        .arg(format!(
            "--manifest.annotation=org.opencontainers.image.revision={commit}"
        )))?;
    run(umoci().args(["gc", "--layout"]).arg(&layout))?;
    let archive = archive_path();
    run(Command::new("tar")
        .current_dir(&layout)
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-cf",
        ])
        .arg(&archive)
        .arg("."))?;
    eprintln!(
        "xtask: wrote {} (push: skopeo copy oci-archive:{}:{VERSION} docker://<registry>/cgtrace:{VERSION})",
        archive.display(),
        archive.display()
    );
    Ok(archive)
}
