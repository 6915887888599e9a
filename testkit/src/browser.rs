//! The dashboard's browser scenarios (`api/tests/browser/e2e.mjs`: Debian's Chromium driven by
//! playwright-core) for any test that serves the dashboard: the API's own tests and the embedded
//! mode's first start.

use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The folder of `e2e.mjs` and its lock file.
pub fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/tests/browser")
}

/// `<target dir>/browser-screenshots`, from the running test binary's path
/// (`<target>/<profile>/deps/`).
pub fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("target dir above the test binary");
    target.join("browser-screenshots")
}

/// `npm ci` from the lock file when playwright-core is not installed yet.
pub async fn ensure_node_modules() {
    if script_dir().join("node_modules/playwright-core").exists() {
        return;
    }
    let status = tokio::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(script_dir())
        .status()
        .await
        .expect("running npm (install Node.js and npm)");
    assert!(
        status.success(),
        "npm ci failed in {}",
        script_dir().display()
    );
}

/// The command running `scenario` against the dashboard at `base_url`, logging in as `users`
/// (role, user name, password), with stdin and stdout piped for the scenario's requests and its
/// `RESULT` line. The browser is killed when the child is dropped.
pub async fn scenario_command(
    base_url: &str,
    scenario: &str,
    users: &[(&str, &str, &str)],
) -> tokio::process::Command {
    ensure_node_modules().await;
    let mut command = tokio::process::Command::new("node");
    command
        .arg(script_dir().join("e2e.mjs"))
        .current_dir(script_dir())
        .env("BASE_URL", base_url)
        .env("SCENARIO", scenario)
        .env("SCREENSHOT_DIR", screenshot_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (role, username, password) in users {
        let role = role.to_uppercase();
        command
            .env(format!("{role}_USER"), username)
            .env(format!("{role}_PASSWORD"), password);
    }
    command
}
