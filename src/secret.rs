//! Secret-bearing types and the small amount of cryptography shared by the
//! barrier, the gatekeeper and auth.
//!
//! Invariant: every secret in memory lives in a `Zeroizing` buffer and prints
//! as `<redacted>`; secrets are compared in constant time, through their
//! SHA-256 hashes where one side is stored.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// A 256-bit symmetric key, wiped on drop.
#[derive(Clone, Zeroize)]
#[zeroize(drop)]
pub struct Key32([u8; 32]);

impl Key32 {
    /// A fresh key from the operating system's RNG.
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        Key32(k)
    }

    /// Wrap existing bytes (the caller's copy should be zeroized by the caller).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Key32(bytes)
    }

    /// Copy out of a slice; `None` when it is not 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Key32(arr))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A secret string handed to or received from a user (token, access key,
/// unseal key). Wiped on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Take ownership of a secret string.
    pub fn new(s: String) -> Self {
        SecretString(Zeroizing::new(s))
    }

    /// The secret text. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        SecretString::new(s)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl serde::Serialize for SecretString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(SecretString::new(String::deserialize(d)?))
    }
}

/// Which kind of bearer secret a string is; the prefix lets secret scanners
/// recognise leaked kstash credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// An access token (`kst_`).
    AccessToken,
    /// A gatekeeper token (`ksg_`).
    GatekeeperToken,
    /// The access key (`ksa_`).
    AccessKey,
}

impl SecretKind {
    /// The printed prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            SecretKind::AccessToken => "kst_",
            SecretKind::GatekeeperToken => "ksg_",
            SecretKind::AccessKey => "ksa_",
        }
    }
}

/// A fresh 256-bit bearer secret of `kind`, base64url without padding.
pub fn new_bearer(kind: SecretKind) -> SecretString {
    let mut raw = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(raw.as_mut());
    let mut s = String::with_capacity(4 + 43);
    s.push_str(kind.prefix());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(raw.as_ref(), &mut s);
    SecretString::new(s)
}

/// Whether `s` is shaped like a bearer secret of `kind` (prefix and length);
/// checked before any lookup so junk never reaches storage.
pub fn looks_like(kind: SecretKind, s: &str) -> bool {
    s.len() == 4 + 43
        && s.starts_with(kind.prefix())
        && s[4..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// SHA-256 of a secret: the only form in which tokens and the access key are
/// stored.
pub fn hash_secret(s: &SecretString) -> [u8; 32] {
    Sha256::digest(s.expose().as_bytes()).into()
}

/// Constant-time equality of two hashes.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// `n` random bytes from the operating system's RNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// Nonce length of AES-256-GCM.
pub const NONCE_LEN: usize = 12;

/// AES-256-GCM seal with a random 96-bit nonce: `nonce | ciphertext+tag`.
/// Used for key wrapping; the barrier adds its own header on top.
pub fn seal(key: &Key32, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce: [u8; NONCE_LEN] = random_bytes();
    let cipher = Aes256Gcm::new(key.as_bytes().into());
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Inverse of [`seal`]; `None` when the key, AAD or bytes do not match.
pub fn open(key: &Key32, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + 16 {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(key.as_bytes().into());
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
        .map(Zeroizing::new)
}

/// A key derived from a bearer secret with HKDF-SHA256 (`info` separates uses).
pub fn derive_key(secret: &SecretString, info: &[u8]) -> Key32 {
    let hk = hkdf::Hkdf::<Sha256>::new(None, secret.expose().as_bytes());
    let mut okm = [0u8; 32];
    hk.expand(info, &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    let key = Key32::from_bytes(okm);
    okm.zeroize();
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_secrets_have_their_prefix_and_shape() {
        let t = new_bearer(SecretKind::AccessToken);
        assert!(looks_like(SecretKind::AccessToken, t.expose()));
        assert!(!looks_like(SecretKind::GatekeeperToken, t.expose()));
        assert!(!looks_like(SecretKind::AccessToken, "kst_short"));
        assert_ne!(t, new_bearer(SecretKind::AccessToken));
    }

    #[test]
    fn secrets_print_redacted() {
        let t = new_bearer(SecretKind::AccessKey);
        assert_eq!(format!("{t:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Key32::random()), "<redacted>");
    }

    #[test]
    fn seal_binds_key_and_aad() {
        let k = Key32::random();
        let sealed = seal(&k, b"here", b"payload");
        assert_eq!(open(&k, b"here", &sealed).unwrap().as_slice(), b"payload");
        assert!(open(&k, b"there", &sealed).is_none());
        assert!(open(&Key32::random(), b"here", &sealed).is_none());
        assert!(open(&k, b"here", &sealed[..10]).is_none());
    }

    #[test]
    fn derived_keys_depend_on_secret_and_info() {
        let s = new_bearer(SecretKind::GatekeeperToken);
        let a = derive_key(&s, b"a");
        assert_eq!(a.as_bytes(), derive_key(&s, b"a").as_bytes());
        assert_ne!(a.as_bytes(), derive_key(&s, b"b").as_bytes());
    }
}
