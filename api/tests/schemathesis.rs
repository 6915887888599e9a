//! Acceptance: schemathesis (installed with pip into a venv under the target directory) runs
//! against `/api/docs/openapi.json` with an admin token and finds no server error and no
//! response that breaks the document. Skips, saying why, only when pip cannot install it.

mod support;

use std::path::PathBuf;

use api::auth::Role;
use bus::memory::MemoryBus;

/// The venv's schemathesis, installed on first use; None when pip cannot install it.
fn schemathesis() -> Option<PathBuf> {
    testkit::python::venv_bin("schemathesis", &["schemathesis"], "schemathesis")
        .map(|bin| bin.join("schemathesis"))
        .inspect_err(|e| eprintln!("SKIPPED: {e:#}"))
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_nonconforming_response() {
    let Some(schemathesis) = tokio::task::spawn_blocking(schemathesis).await.unwrap() else {
        return;
    };
    let mut config = support::config();
    config.auth_rate = "off".parse().unwrap();
    let api = support::start(MemoryBus::new(100_000), config).await;
    api.seed().await;
    let token = api.tokens[&Role::Admin].clone();
    let report = tempdir();
    let run = tokio::process::Command::new(schemathesis)
        .arg("run")
        .arg(api.url("/api/docs/openapi.json"))
        .args(["--url", &api.base])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--max-examples", "25", "--seed", "7", "--workers", "2"])
        // Logging out would revoke the token the run uses.
        .args(["--exclude-path", "/api/auth/logout"])
        .args(["--report-dir", report.to_str().unwrap()])
        .env("NO_COLOR", "1")
        // Its cache goes to the working directory.
        .current_dir(&report)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        run.status.success(),
        "schemathesis found failures (see above)"
    );
    let _ = std::fs::remove_dir_all(report);
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("schemathesis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
