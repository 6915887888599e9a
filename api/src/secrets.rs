//! The secrets an operator configures: the access-token key and the first admin's password.
//! They come from the environment or from a file (`JWT_SECRET_FILE`, `VNCGUARD_ADMIN_PASSWORD_FILE`,
//! the form Docker secrets and the compose deployment's generated secrets take), are refused at
//! start when they are a known placeholder, and are written only to files only their owner reads.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Fragments of the values that sample configurations, tutorials and this project's own old
/// compose file carry. A secret containing one was copied, not generated; the check is on
/// fragments rather than whole values because copies get edited ("change-me-now-2").
const PLACEHOLDER_FRAGMENTS: &[&str] = &[
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "replaceme",
    "placeholder",
    "example",
    "your-secret",
    "yoursecret",
    "insecure",
    "secret-key",
    "supersecret",
];

/// Fewer distinct characters than this is a pattern, not a key ("aaaa…", "abcabc…"): 32 random
/// hex digits use at least 10 of 16 symbols with overwhelming probability.
const MIN_DISTINCT_CHARS: usize = 8;

/// Why a configured secret is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretRefused {
    #[error("{what} must have at least {min} characters")]
    TooShort { what: &'static str, min: usize },
    #[error("{what} looks like a placeholder (it contains {fragment:?}); generate one, e.g. `openssl rand -hex 32`")]
    Placeholder {
        what: &'static str,
        fragment: &'static str,
    },
    #[error("{what} has fewer than {MIN_DISTINCT_CHARS} distinct characters; generate one, e.g. `openssl rand -hex 32`")]
    Pattern { what: &'static str },
}

/// Refuses a secret that is short, a known placeholder or a pattern.
pub fn check_secret(what: &'static str, value: &str, min: usize) -> Result<(), SecretRefused> {
    if value.chars().count() < min {
        return Err(SecretRefused::TooShort { what, min });
    }
    let lower = value.to_lowercase();
    if let Some(fragment) = PLACEHOLDER_FRAGMENTS.iter().find(|f| lower.contains(**f)) {
        return Err(SecretRefused::Placeholder { what, fragment });
    }
    let distinct: std::collections::BTreeSet<char> = value.chars().collect();
    if distinct.len() < MIN_DISTINCT_CHARS {
        return Err(SecretRefused::Pattern { what });
    }
    Ok(())
}

/// The access-token key: at least 32 characters (HS256 wants as many bytes of key as its hash).
pub fn check_jwt_secret(value: &str) -> Result<(), SecretRefused> {
    check_secret("JWT_SECRET", value, 32)
}

/// A secret given inline or as a file (the file wins; surrounding whitespace is dropped).
pub fn read_secret(inline: Option<String>, file: Option<&Path>) -> std::io::Result<Option<String>> {
    match file {
        Some(path) => Ok(Some(std::fs::read_to_string(path)?.trim().to_string())),
        None => Ok(inline),
    }
}

/// Writes `contents` to `path` readable by its owner only (0600), also when the file existed
/// with wider permissions.
pub fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// A random secret of `bytes` bytes from the OS, hex-encoded.
pub fn random_secret(bytes: usize) -> String {
    use rand::Rng;
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill(&mut buffer[..]);
    hex::encode(buffer)
}

/// Reads the secret at `path`, or makes one of `bytes` random bytes there (0600) on first use;
/// an existing file with wider permissions is narrowed to 0600.
pub fn local_secret(path: &Path, bytes: usize) -> std::io::Result<String> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        if existing.trim().len() >= bytes {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            return Ok(existing.trim().to_string());
        }
    }
    let secret = random_secret(bytes);
    write_private_file(path, &secret)?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_patterns_and_short_keys_are_refused() {
        assert!(matches!(
            check_jwt_secret("change-me-to-a-long-random-secret"),
            Err(SecretRefused::Placeholder {
                fragment: "change-me",
                ..
            })
        ));
        assert!(matches!(
            check_jwt_secret("vncguard-insecure-development-secret"),
            Err(SecretRefused::Placeholder { .. })
        ));
        assert_eq!(
            check_jwt_secret(&"ab".repeat(20)),
            Err(SecretRefused::Pattern { what: "JWT_SECRET" })
        );
        assert!(matches!(
            check_jwt_secret("short"),
            Err(SecretRefused::TooShort { .. })
        ));
        assert_eq!(check_jwt_secret(&random_secret(32)), Ok(()));
        assert!(check_secret("VNCGUARD_ADMIN_PASSWORD", "change-me-now", 10).is_err());
    }

    #[test]
    fn secret_files_are_private_and_kept() {
        let dir = std::env::temp_dir().join(format!("vncguard-secrets-{}", std::process::id()));
        let path = dir.join("jwt-secret");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, "too short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let made = local_secret(&path, 32).unwrap();
        assert_eq!(made.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            local_secret(&path, 32).unwrap(),
            made,
            "a second start keeps it"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        local_secret(&path, 32).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "an existing file is narrowed");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
