//! Publisher signatures on components (ed25519).
//!
//! A publisher signs a component file with its secret key (`weir sign`);
//! the signature travels beside it as `<file>.sig`, a small JSON document
//! naming the publisher, its public key, the component's blake3 digest and
//! the signature over `weir-component-signature-v1` followed by the digest's
//! 32 bytes. A project trusts a publisher's key in its `weir.toml`
//! (`weir trust add`); a component whose signature verifies under a trusted
//! key gets what that entry grants. Anything else (unsigned, unknown key,
//! bad signature, a digest that does not match the bytes) gets the minimal
//! sandbox.

use crate::digest::Digest;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What is signed, before the digest bytes; changing it invalidates every signature.
const CONTEXT: &[u8] = b"weir-component-signature-v1";

/// The `.sig` file beside a component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// The publisher's name, as it chose it.
    pub publisher: String,
    /// Its public key, `ed25519:<64 hex>`.
    pub key: String,
    /// The component's digest (64 hex).
    pub digest: String,
    /// The signature (128 hex).
    pub signature: String,
}

/// Where a component's signature lives.
pub fn signature_path(component: &Path) -> PathBuf {
    let mut s = component.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

/// Parses `ed25519:<64 hex>`.
pub fn parse_public_key(text: &str) -> anyhow::Result<VerifyingKey> {
    let hex = text.trim().strip_prefix("ed25519:").ok_or_else(|| {
        anyhow::anyhow!("expected a public key like ed25519:<64 hex characters>, found {text:?}")
    })?;
    let bytes: [u8; 32] = from_hex(hex)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            anyhow::anyhow!("expected 64 hex characters after ed25519:, found {hex:?}")
        })?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("not an ed25519 public key: {e}"))
}

/// Formats a public key as `ed25519:<64 hex>`.
pub fn format_public_key(k: &VerifyingKey) -> String {
    format!("ed25519:{}", to_hex(k.as_bytes()))
}

/// A new secret key from the operating system's randomness.
pub fn generate_key() -> anyhow::Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| anyhow::anyhow!("no randomness from the operating system: {e}"))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A secret key file's text: `ed25519-secret:<64 hex>`.
pub fn format_secret_key(k: &SigningKey) -> String {
    format!("ed25519-secret:{}\n", to_hex(&k.to_bytes()))
}

/// Reads a secret key file written by [`format_secret_key`].
pub fn read_secret_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read key {}: {e}", path.display()))?;
    let hex = text.trim().strip_prefix("ed25519-secret:").ok_or_else(|| {
        anyhow::anyhow!(
            "{} is not a weir secret key (it should start with ed25519-secret:)",
            path.display()
        )
    })?;
    let bytes: [u8; 32] = from_hex(hex)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: expected 64 hex characters after ed25519-secret:",
                path.display()
            )
        })?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Signs the component with digest `digest`.
pub fn sign(digest: &Digest, key: &SigningKey, publisher: &str) -> SignatureFile {
    let sig = key.sign(&message(digest));
    SignatureFile {
        publisher: publisher.to_string(),
        key: format_public_key(&key.verifying_key()),
        digest: digest.to_hex(),
        signature: to_hex(&sig.to_bytes()),
    }
}

/// A verified signature: who signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The publisher name in the signature file.
    pub publisher: String,
    /// Its key.
    pub key: VerifyingKey,
}

/// Verifies the signature beside `component` for the bytes whose digest is
/// `digest`. `Ok(None)`: no signature file. `Err`: a signature that does not
/// verify, saying why.
pub fn verify(component: &Path, digest: &Digest) -> anyhow::Result<Option<Signer>> {
    let path = signature_path(component);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    };
    let file: SignatureFile = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a weir signature: {e}", path.display()))?;
    if file.digest != digest.to_hex() {
        return Err(anyhow::anyhow!(
            "{} signs component {}, but the file's digest is {} (the component changed after signing)",
            path.display(),
            &file.digest[..12.min(file.digest.len())],
            digest.short()
        ));
    }
    let key =
        parse_public_key(&file.key).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let sig: [u8; 64] = from_hex(&file.signature)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: the signature is not 128 hex characters",
                path.display()
            )
        })?;
    key.verify(&message(digest), &Signature::from_bytes(&sig))
        .map_err(|_| {
            anyhow::anyhow!(
                "{}: the signature does not verify under key {}",
                path.display(),
                file.key
            )
        })?;
    Ok(Some(Signer {
        publisher: file.publisher,
        key,
    }))
}

fn message(digest: &Digest) -> Vec<u8> {
    let mut m = CONTEXT.to_vec();
    m.extend_from_slice(digest.as_bytes());
    m
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_bytes_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("c.wasm");
        std::fs::write(&wasm, b"component bytes").unwrap();
        let d = Digest::of(b"component bytes");
        assert_eq!(verify(&wasm, &d).unwrap(), None);
        let key = generate_key().unwrap();
        let sig = sign(&d, &key, "acme");
        std::fs::write(signature_path(&wasm), serde_json::to_string(&sig).unwrap()).unwrap();
        let signer = verify(&wasm, &d).unwrap().unwrap();
        assert_eq!(signer.publisher, "acme");
        assert_eq!(signer.key, key.verifying_key());
        assert_eq!(
            parse_public_key(&format_public_key(&signer.key)).unwrap(),
            signer.key
        );
        // Other bytes: refused.
        let e = verify(&wasm, &Digest::of(b"other"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("the component changed after signing"), "{e}");
        // A signature made by another key but claiming this one: refused.
        let mut forged = sign(&d, &generate_key().unwrap(), "acme");
        forged.key = sig.key.clone();
        std::fs::write(
            signature_path(&wasm),
            serde_json::to_string(&forged).unwrap(),
        )
        .unwrap();
        assert!(
            verify(&wasm, &d)
                .unwrap_err()
                .to_string()
                .contains("does not verify")
        );
        // Secret keys round-trip through their file form.
        let kf = dir.path().join("k");
        std::fs::write(&kf, format_secret_key(&key)).unwrap();
        assert_eq!(read_secret_key(&kf).unwrap().to_bytes(), key.to_bytes());
        assert!(parse_public_key("ed25519:zz").is_err());
        assert!(parse_public_key("rsa:00").is_err());
    }
}
