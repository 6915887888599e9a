//! Python tools the tests run against vncguard (schemathesis, fastavro): a venv per tool under
//! the cargo target directory, created and filled with pip on first use, reused after.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The `bin` directory of venv `name` with `packages` installed (pip requirement strings).
/// `probe` is a file in that directory that exists once the install succeeded.
pub fn venv_bin(name: &str, packages: &[&str], probe: &str) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let venv = target.join(format!("{name}-venv"));
    let bin = venv.join("bin");
    if bin.join(probe).exists() {
        return Ok(bin);
    }
    let created = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .context("running python3 -m venv")?;
    if !created.success() {
        bail!("python3 -m venv {} failed: {created}", venv.display());
    }
    let installed = Command::new(bin.join("pip"))
        .args(["install", "-q"])
        .args(packages)
        .status()
        .context("running pip")?;
    if !installed.success() || !bin.join(probe).exists() {
        bail!(
            "pip could not install {packages:?} into {}: {installed}",
            venv.display()
        );
    }
    Ok(bin)
}
