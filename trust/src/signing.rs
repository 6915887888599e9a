//! Signed decisions: the responder and the API sign every decision they publish with Ed25519
//! (RFC 8032, `ed25519-dalek`); an agent applies only decisions whose signature verifies under a
//! public key it is configured with.
//!
//! # What is signed
//!
//! [`signed_bytes`]: the domain tag `vncguard.Decision.v1\n`, then each field of the decision in
//! this order, each as a 4-byte big-endian length and its UTF-8 text, an absent optional field as
//! the length `0xFFFFFFFF` and nothing after it:
//!
//! `decision_id`, `action`, `origin`, `scope` (their Avro symbols: `block`, `automatic`, `ip`...),
//! `value`, `duration_secs` (decimal), `created_at`, `until` (RFC 3339 UTC with nine fractional
//! digits and `Z`: `2026-12-04T21:20:36.123456789Z`), `reason`, `threat_id`,
//! `target_decision_id`, `created_by`, `dry_run` (`true`/`false`), `key_id`.
//!
//! Every field is covered, so nothing of a signed decision can change (a longer ban, another
//! target, `dry_run` turned off) without the signature failing; the key id is covered so a
//! signature cannot be presented as another key's. The length prefixes keep field boundaries
//! unambiguous (`"a" "bc"` and `"ab" "c"` sign differently), and the domain tag keeps these
//! signatures from being valid for any other message a key might sign. `signature` is the 64-byte
//! Ed25519 signature in standard base64 (with padding).
//!
//! # Keys
//!
//! A private key file holds one line `key_id:BASE64` (the 32-byte Ed25519 seed) under a comment;
//! it is created 0600 and refused when group or others may read it. A public key is the line
//! `key_id:BASE64` (the 32-byte public key); agents take a list of such lines or files holding
//! them (`DECISION_PUBLIC_KEYS`), so several keys are accepted at once during a rotation.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use schemas::{Decision, DecisionAction, DecisionOrigin, DecisionScope};
use sha2::{Digest, Sha256};

/// Prefix of the signed bytes: a signature over them is a vncguard decision signature and
/// nothing else.
pub const SIGNATURE_DOMAIN: &[u8] = b"vncguard.Decision.v1\n";

/// Longest key id: an id travels in every decision and in log lines.
const MAX_KEY_ID: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} exists already (give --if-missing to keep it)")]
    Exists { path: String },
    #[error("{path} may be read by group or others (mode {mode:o}); chmod 600 it")]
    Exposed { path: String, mode: u32 },
    #[error("{origin}: {message}")]
    Malformed { origin: String, message: String },
    #[error(
        "no decision public keys configured (DECISION_PUBLIC_KEYS: key_id:BASE64 or files of them)"
    )]
    NoKeys,
}

/// Why a decision's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the decision is not signed")]
    Unsigned,
    #[error("signed with key {0:?}, which is not configured")]
    UnknownKey(String),
    #[error("the signature does not verify (forged or altered)")]
    Forged,
}

impl SignatureError {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::Unsigned => "unsigned",
            SignatureError::UnknownKey(_) => "unknown_key",
            SignatureError::Forged => "forged",
        }
    }
}

// The enums' Avro symbols, spelled out so the signed form cannot drift with serde attributes.
fn action_symbol(action: DecisionAction) -> &'static str {
    match action {
        DecisionAction::Block => "block",
        DecisionAction::Unblock => "unblock",
        DecisionAction::Quarantine => "quarantine",
    }
}

fn origin_symbol(origin: DecisionOrigin) -> &'static str {
    match origin {
        DecisionOrigin::Automatic => "automatic",
        DecisionOrigin::Analyst => "analyst",
    }
}

fn scope_symbol(scope: DecisionScope) -> &'static str {
    match scope {
        DecisionScope::Ip => "ip",
        DecisionScope::Cidr => "cidr",
        DecisionScope::Session => "session",
    }
}

/// The canonical bytes a decision's signature covers (see the module documentation).
pub fn signed_bytes(d: &Decision) -> Vec<u8> {
    let time = |t: &schemas::Timestamp| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let fields: [Option<String>; 14] = [
        Some(d.decision_id.clone()),
        Some(action_symbol(d.action).into()),
        Some(origin_symbol(d.origin).into()),
        Some(scope_symbol(d.scope).into()),
        Some(d.value.clone()),
        Some(d.duration_secs.to_string()),
        Some(time(&d.created_at)),
        Some(time(&d.until)),
        Some(d.reason.clone()),
        d.threat_id.clone(),
        d.target_decision_id.clone(),
        d.created_by.clone(),
        Some(d.dry_run.to_string()),
        d.key_id.clone(),
    ];
    let mut bytes = SIGNATURE_DOMAIN.to_vec();
    for field in &fields {
        match field {
            Some(text) => {
                let length = u32::try_from(text.len()).unwrap_or(u32::MAX - 1);
                bytes.extend_from_slice(&length.to_be_bytes());
                bytes.extend_from_slice(text.as_bytes());
            }
            None => bytes.extend_from_slice(&u32::MAX.to_be_bytes()),
        }
    }
    bytes
}

fn valid_key_id(key_id: &str) -> bool {
    !key_id.is_empty()
        && key_id.len() <= MAX_KEY_ID
        && key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `key_id:BASE64` of 32 bytes.
fn parse_key_line(line: &str, origin: &str) -> Result<(String, [u8; 32]), SigningError> {
    let malformed = |message: String| SigningError::Malformed {
        origin: origin.to_string(),
        message,
    };
    let (key_id, encoded) = line
        .trim()
        .split_once(':')
        .ok_or_else(|| malformed("expected key_id:BASE64".into()))?;
    if !valid_key_id(key_id) {
        return Err(malformed(format!(
            "key id {key_id:?} must be 1-{MAX_KEY_ID} letters, digits, '.', '_' or '-'"
        )));
    }
    let bytes = STANDARD
        .decode(encoded.trim())
        .map_err(|e| malformed(format!("key {key_id}: not base64: {e}")))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| malformed(format!("key {key_id}: {} bytes, not 32", b.len())))?;
    Ok((key_id.to_string(), bytes))
}

/// The non-comment, non-blank lines of a key file.
fn key_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
}

fn read(path: &Path) -> Result<String, SigningError> {
    std::fs::read_to_string(path).map_err(|source| SigningError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// A private signing key and its id: what the responder and the API sign with.
#[derive(Clone)]
pub struct DecisionSigner {
    key_id: String,
    key: SigningKey,
}

impl std::fmt::Debug for DecisionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl DecisionSigner {
    /// A new random key (the operating system's generator), named `key_id` or, by default,
    /// `ed25519-` and the first 8 bytes of the public key's SHA-256 in hex.
    pub fn generate(key_id: Option<&str>) -> Result<DecisionSigner, SigningError> {
        let key = SigningKey::generate(&mut rand_core::OsRng);
        let key_id = match key_id {
            Some(id) => id.to_string(),
            None => {
                let digest = Sha256::digest(key.verifying_key().as_bytes());
                format!("ed25519-{}", hex::encode(&digest[..8]))
            }
        };
        if !valid_key_id(&key_id) {
            return Err(SigningError::Malformed {
                origin: "--key-id".into(),
                message: format!(
                    "{key_id:?} must be 1-{MAX_KEY_ID} letters, digits, '.', '_' or '-'"
                ),
            });
        }
        Ok(DecisionSigner { key_id, key })
    }

    /// Reads a private key file; refuses one that group or others may read.
    pub fn from_file(path: &Path) -> Result<DecisionSigner, SigningError> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|source| SigningError::Read {
                path: path.display().to_string(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(SigningError::Exposed {
                path: path.display().to_string(),
                mode: mode & 0o777,
            });
        }
        let text = read(path)?;
        let origin = path.display().to_string();
        let mut lines = key_lines(&text);
        let (Some(line), None) = (lines.next(), lines.next()) else {
            return Err(SigningError::Malformed {
                origin,
                message: "expected exactly one key_id:BASE64 line".into(),
            });
        };
        let (key_id, seed) = parse_key_line(line, &origin)?;
        Ok(DecisionSigner {
            key_id,
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Writes the private key to `key_path` (created 0600, never over an existing file) and the
    /// public key line to `public_path`.
    pub fn write(&self, key_path: &Path, public_path: &Path) -> Result<(), SigningError> {
        use std::os::unix::fs::OpenOptionsExt;
        let write_error = |path: &Path| {
            let path = path.display().to_string();
            move |source: std::io::Error| match source.kind() {
                std::io::ErrorKind::AlreadyExists => SigningError::Exists { path: path.clone() },
                _ => SigningError::Write {
                    path: path.clone(),
                    source,
                },
            }
        };
        let secret = format!(
            "# vncguard decision signing key (Ed25519 seed). Secret: keep it 0600, never commit it.\n{}:{}\n",
            self.key_id,
            STANDARD.encode(self.key.to_bytes())
        );
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(key_path)
            .and_then(|mut file| file.write_all(secret.as_bytes()))
            .map_err(write_error(key_path))?;
        self.write_public(public_path)
    }

    fn write_public(&self, public_path: &Path) -> Result<(), SigningError> {
        std::fs::write(public_path, format!("{}\n", self.public_key_line())).map_err(|source| {
            SigningError::Write {
                path: public_path.display().to_string(),
                source,
            }
        })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// `key_id:BASE64` of the public key, as agents are configured with it.
    pub fn public_key_line(&self) -> String {
        format!(
            "{}:{}",
            self.key_id,
            STANDARD.encode(self.key.verifying_key().as_bytes())
        )
    }

    /// A verifier that accepts this key alone.
    pub fn verifier(&self) -> DecisionVerifier {
        let mut verifier = DecisionVerifier::default();
        verifier
            .keys
            .insert(self.key_id.clone(), self.key.verifying_key());
        verifier
    }

    /// Sets the decision's `key_id` to this key's and its `signature` over every other field.
    pub fn sign(&self, decision: &mut Decision) {
        decision.key_id = Some(self.key_id.clone());
        let signature = self.key.sign(&signed_bytes(decision));
        decision.signature = Some(STANDARD.encode(signature.to_bytes()));
    }

    /// `decision`, signed.
    pub fn signed(&self, mut decision: Decision) -> Decision {
        self.sign(&mut decision);
        decision
    }
}

/// The public keys an agent accepts decisions from, by key id.
#[derive(Debug, Clone, Default)]
pub struct DecisionVerifier {
    keys: BTreeMap<String, VerifyingKey>,
}

impl DecisionVerifier {
    /// From `DECISION_PUBLIC_KEYS` entries: each a `key_id:BASE64` line, or the path of a file of
    /// such lines (`#` comments allowed). At least one key is required.
    pub fn from_entries(entries: &[String]) -> Result<DecisionVerifier, SigningError> {
        let mut verifier = DecisionVerifier::default();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let path = Path::new(entry);
            if path.is_file() {
                let text = read(path)?;
                for line in key_lines(&text) {
                    verifier.add(line, &path.display().to_string())?;
                }
            } else {
                verifier.add(entry, "DECISION_PUBLIC_KEYS")?;
            }
        }
        if verifier.keys.is_empty() {
            return Err(SigningError::NoKeys);
        }
        Ok(verifier)
    }

    fn add(&mut self, line: &str, origin: &str) -> Result<(), SigningError> {
        let (key_id, bytes) = parse_key_line(line, origin)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|e| SigningError::Malformed {
            origin: origin.to_string(),
            message: format!("key {key_id}: not an Ed25519 public key: {e}"),
        })?;
        if self.keys.get(&key_id).is_some_and(|known| *known != key) {
            return Err(SigningError::Malformed {
                origin: origin.to_string(),
                message: format!("key id {key_id} is given twice with different keys"),
            });
        }
        self.keys.insert(key_id, key);
        Ok(())
    }

    /// The ids of the accepted keys.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Checks `decision`'s signature; the id of the key it verifies under.
    pub fn verify<'a>(&self, decision: &'a Decision) -> Result<&'a str, SignatureError> {
        let (Some(key_id), Some(signature)) = (&decision.key_id, &decision.signature) else {
            return Err(SignatureError::Unsigned);
        };
        let key = self
            .keys
            .get(key_id)
            .ok_or_else(|| SignatureError::UnknownKey(key_id.clone()))?;
        let signature = STANDARD
            .decode(signature)
            .ok()
            .and_then(|bytes| Signature::from_slice(&bytes).ok())
            .ok_or(SignatureError::Forged)?;
        // Strict verification refuses the malleable and small-order encodings RFC 8032 allows.
        key.verify_strict(&signed_bytes(decision), &signature)
            .map_err(|_| SignatureError::Forged)?;
        Ok(key_id)
    }
}

/// `keygen`: a new decision signing key (the responder and the API have this subcommand).
#[derive(Debug, Clone, clap::Args)]
pub struct KeygenArgs {
    /// Where the private key goes: created 0600, never over an existing file.
    #[arg(long, env = "DECISION_SIGNING_KEY_FILE")]
    pub key_file: PathBuf,
    /// Where the public key line (key_id:BASE64) goes [default: the key file with `.pub`].
    #[arg(long)]
    pub public_file: Option<PathBuf>,
    /// The key's id in decisions [default: ed25519- and 16 hex digits of its public key's hash].
    #[arg(long)]
    pub key_id: Option<String>,
    /// Keep a key file that exists (and write its public key again) instead of failing: for an
    /// init step that runs at every start.
    #[arg(long)]
    pub if_missing: bool,
}

impl KeygenArgs {
    /// Makes (or with `--if-missing` keeps) the key; the public key line.
    pub fn run(&self) -> Result<String, SigningError> {
        let public_file = self.public_file.clone().unwrap_or_else(|| {
            let mut name = self.key_file.clone().into_os_string();
            name.push(".pub");
            PathBuf::from(name)
        });
        if self.if_missing && self.key_file.exists() {
            let signer = DecisionSigner::from_file(&self.key_file)?;
            signer.write_public(&public_file)?;
            return Ok(signer.public_key_line());
        }
        let signer = DecisionSigner::generate(self.key_id.as_deref())?;
        signer.write(&self.key_file, &public_file)?;
        Ok(signer.public_key_line())
    }
}

/// The key at `path`, made there (0600) on first use: the embedded mode's own key.
pub fn local_signer(path: &Path) -> Result<DecisionSigner, SigningError> {
    if path.exists() {
        return DecisionSigner::from_file(path);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| SigningError::Write {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let signer = DecisionSigner::generate(None)?;
    let mut public = path.to_path_buf().into_os_string();
    public.push(".pub");
    signer.write(path, Path::new(&public))?;
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn decision() -> Decision {
        let at = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        Decision {
            decision_id: "d1".into(),
            action: DecisionAction::Block,
            origin: DecisionOrigin::Automatic,
            scope: DecisionScope::Ip,
            value: "192.0.2.10".into(),
            duration_secs: 3600,
            created_at: at,
            until: at + chrono::Duration::seconds(3600),
            reason: "brute force".into(),
            threat_id: Some("t1".into()),
            target_decision_id: None,
            created_by: Some("policy:brute_force".into()),
            dry_run: false,
            key_id: None,
            signature: None,
        }
    }

    #[test]
    fn a_signed_decision_verifies_and_any_change_breaks_it() {
        let signer = DecisionSigner::generate(Some("responder-1")).unwrap();
        let verifier = signer.verifier();
        let signed = signer.signed(decision());
        assert_eq!(verifier.verify(&signed), Ok("responder-1"));

        let altered: Vec<Decision> = vec![
            Decision {
                value: "192.0.2.11".into(),
                ..signed.clone()
            },
            Decision {
                until: signed.until + chrono::Duration::nanoseconds(1),
                ..signed.clone()
            },
            Decision {
                dry_run: true,
                ..signed.clone()
            },
            Decision {
                action: DecisionAction::Unblock,
                ..signed.clone()
            },
            Decision {
                target_decision_id: Some("d0".into()),
                ..signed.clone()
            },
            Decision {
                threat_id: None,
                ..signed.clone()
            },
        ];
        for decision in &altered {
            assert_eq!(verifier.verify(decision), Err(SignatureError::Forged));
        }
        assert_eq!(
            verifier.verify(&decision()),
            Err(SignatureError::Unsigned),
            "no key id, no signature"
        );
        let other = DecisionSigner::generate(Some("intruder")).unwrap();
        assert_eq!(
            verifier.verify(&other.signed(decision())),
            Err(SignatureError::UnknownKey("intruder".into()))
        );
        // Another key under the known id: the signature does not verify.
        let impostor = DecisionSigner::generate(Some("responder-1")).unwrap();
        assert_eq!(
            verifier.verify(&impostor.signed(decision())),
            Err(SignatureError::Forged)
        );
        let garbage = Decision {
            signature: Some("not base64!".into()),
            ..signed.clone()
        };
        assert_eq!(verifier.verify(&garbage), Err(SignatureError::Forged));
    }

    #[test]
    fn field_boundaries_are_part_of_the_signed_form() {
        let a = Decision {
            reason: "ab".into(),
            created_by: Some("c".into()),
            ..decision()
        };
        let b = Decision {
            reason: "a".into(),
            created_by: Some("bc".into()),
            ..decision()
        };
        assert_ne!(signed_bytes(&a), signed_bytes(&b));
        let none = Decision {
            threat_id: None,
            ..decision()
        };
        let empty = Decision {
            threat_id: Some(String::new()),
            ..decision()
        };
        assert_ne!(signed_bytes(&none), signed_bytes(&empty));
        assert!(signed_bytes(&decision()).starts_with(SIGNATURE_DOMAIN));
    }

    #[test]
    fn key_files_round_trip_and_stay_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vg-trust-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("responder.key");
        let args = KeygenArgs {
            key_file: key_file.clone(),
            public_file: None,
            key_id: Some("responder-2026".into()),
            if_missing: false,
        };
        let public = args.run().unwrap();
        assert!(public.starts_with("responder-2026:"), "{public}");
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let public_file = dir.join("responder.key.pub");
        assert_eq!(
            std::fs::read_to_string(&public_file).unwrap().trim(),
            public
        );

        // A second keygen never replaces the key; with --if-missing it keeps it.
        assert!(matches!(args.run(), Err(SigningError::Exists { .. })));
        let kept = KeygenArgs {
            if_missing: true,
            ..args.clone()
        };
        assert_eq!(kept.run().unwrap(), public);

        // The file's key signs what the public file's key verifies.
        let signer = DecisionSigner::from_file(&key_file).unwrap();
        let verifier =
            DecisionVerifier::from_entries(&[public_file.display().to_string()]).unwrap();
        assert_eq!(
            verifier.verify(&signer.signed(decision())),
            Ok("responder-2026")
        );
        // Several keys at once: the inline line and another key.
        let next = DecisionSigner::generate(Some("responder-2027")).unwrap();
        let both =
            DecisionVerifier::from_entries(&[public.clone(), next.public_key_line()]).unwrap();
        assert_eq!(
            both.key_ids().collect::<Vec<_>>(),
            ["responder-2026", "responder-2027"]
        );
        assert!(both.verify(&next.signed(decision())).is_ok());

        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            DecisionSigner::from_file(&key_file),
            Err(SigningError::Exposed { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_public_keys_are_errors() {
        assert!(matches!(
            DecisionVerifier::from_entries(&[]),
            Err(SigningError::NoKeys)
        ));
        for bad in ["no-colon", "bad id:AAAA", "k:not-base64", "k:AAAA"] {
            let err = DecisionVerifier::from_entries(&[bad.to_string()]).unwrap_err();
            assert!(
                matches!(err, SigningError::Malformed { .. }),
                "{bad}: {err}"
            );
        }
    }
}
