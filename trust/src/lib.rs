//! What makes a decision on `vnc.decisions` safe to act on, in one place for every party that
//! makes or applies one (the responder, the API, the capture agents):
//!
//! - [`signing`]: Ed25519 signatures over a canonical byte form of every field of a
//!   [`schemas::Decision`]; the signers' key files and `keygen`; the verifier agents configure
//!   with the public keys they accept (`DECISION_PUBLIC_KEYS`).
//! - [`guardrails`]: what no decision may block, however well signed: loopback, the agent's own
//!   addresses, management networks and the allow-list; prefixes wider than /24 (IPv4) or /48
//!   (IPv6); more blocks in force than a cap. Addresses are normalised first (IPv4-mapped IPv6
//!   to IPv4, host bits cleared, IPv6 folded to /64).
//!
//! The API answers 422 for what the guardrails refuse; an agent refuses it again, counts and
//! logs it: what acts on a firewall is verified where it is applied.

pub mod guardrails;
pub mod signing;

pub use guardrails::{GuardrailArgs, Guardrails, Refusal};
pub use signing::{DecisionSigner, DecisionVerifier, KeygenArgs, SignatureError, SigningError};
