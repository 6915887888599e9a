//! Shared by the SIEM-format tests: the EVE consumer check.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python interpreter with `jsonschema` (Debian's python3-jsonschema is for the system
/// one, which a pyenv on PATH would hide).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Validates every line of `output` against `schema` with Python's jsonschema; the errors.
pub fn validate(output: &[u8], schema: &Path) -> String {
    use std::io::Write;
    const CHECK: &str = r#"
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
bad = 0
for number, line in enumerate(sys.stdin, 1):
    for error in validator.iter_errors(json.loads(line)):
        bad += 1
        print(f"line {number}: {'/'.join(map(str, error.absolute_path))}: {error.message}")
sys.exit(1 if bad else 0)
"#;
    let mut child = Command::new(python())
        .args(["-c", CHECK])
        .arg(schema)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (./dev test installs python3-jsonschema)");
    child.stdin.take().unwrap().write_all(output).unwrap();
    let result = child.wait_with_output().unwrap();
    let mut report = String::from_utf8_lossy(&result.stdout).to_string();
    report.push_str(&String::from_utf8_lossy(&result.stderr));
    if result.status.success() {
        String::new()
    } else {
        assert!(
            !report.contains("No module named 'jsonschema'"),
            "python3-jsonschema is missing: ./dev test installs it"
        );
        report
    }
}

pub fn eve_schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/eve/eve-rfb-alert.schema.json")
}
