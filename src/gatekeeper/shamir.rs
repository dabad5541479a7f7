//! Unseal keys: Shamir shares of the gatekeeper key, through `blahaj`.
//!
//! blahaj accepts a share with x = 0 (which is the secret itself) and silently
//! returns a wrong key when a share is duplicated, so both are refused here
//! before combining. Each unseal key carries a 4-byte checksum so a mistyped
//! key is refused on submission rather than producing a wrong key later.
//!
//! Printed form: base64 of `x (1) | y (32) | sha256(x|y)[..4]`.

use base64::Engine;
use blahaj::{Share, Sharks};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::GatekeeperError;
use crate::secret::{Key32, SecretString};

const Y_LEN: usize = 32;
const CHECK_LEN: usize = 4;
const SHARE_LEN: usize = 1 + Y_LEN + CHECK_LEN;

/// One parsed unseal key. Its bytes are wiped on drop (blahaj's `Share`
/// zeroizes itself).
pub struct UnsealKey(Share);

impl std::fmt::Debug for UnsealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnsealKey(<redacted>)")
    }
}

impl UnsealKey {
    /// The share's x coordinate (1..=255): identifies the key without revealing it.
    pub fn index(&self) -> u8 {
        self.0.x.0
    }
}

fn checksum(body: &[u8]) -> [u8; CHECK_LEN] {
    let d = Sha256::digest(body);
    [d[0], d[1], d[2], d[3]]
}

/// Check Shamir parameters: 1 ≤ threshold ≤ shares ≤ 255, and a threshold of
/// at least 2 when there is more than one share.
pub fn check_parameters(shares: u32, threshold: u32) -> Result<(u8, u8), GatekeeperError> {
    if !(1..=255).contains(&shares) {
        return Err(GatekeeperError::BadParameters(format!(
            "shares must be between 1 and 255, got {shares}"
        )));
    }
    if threshold < 1 || threshold > shares {
        return Err(GatekeeperError::BadParameters(format!(
            "threshold must be between 1 and shares ({shares}), got {threshold}"
        )));
    }
    if shares > 1 && threshold < 2 {
        return Err(GatekeeperError::BadParameters(
            "threshold must be at least 2 when there is more than one share".into(),
        ));
    }
    Ok((shares as u8, threshold as u8))
}

/// Split the gatekeeper key into `shares` unseal keys, any `threshold` of
/// which rebuild it.
pub fn split(key: &Key32, shares: u8, threshold: u8) -> Vec<SecretString> {
    let dealer = Sharks(threshold).dealer(key.as_bytes());
    dealer
        .take(shares as usize)
        .map(|share| {
            let mut bytes = Zeroizing::new(Vec::from(&share));
            let check = checksum(&bytes);
            bytes.extend_from_slice(&check);
            SecretString::new(base64::engine::general_purpose::STANDARD.encode(bytes.as_slice()))
        })
        .collect()
}

/// Parse one unseal key as typed by a user (surrounding whitespace ignored).
pub fn parse(text: &str) -> Result<UnsealKey, GatekeeperError> {
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| GatekeeperError::BadUnsealKey("not valid base64".into()))?,
    );
    if bytes.len() != SHARE_LEN {
        return Err(GatekeeperError::BadUnsealKey(format!(
            "decodes to {} bytes; an unseal key is {SHARE_LEN}",
            bytes.len()
        )));
    }
    let (body, check) = bytes.split_at(1 + Y_LEN);
    if !crate::secret::ct_eq(&checksum(body), check) {
        return Err(GatekeeperError::BadUnsealKey(
            "checksum mismatch (mistyped or corrupted)".into(),
        ));
    }
    if body[0] == 0 {
        return Err(GatekeeperError::BadUnsealKey(
            "share index 0 is not allowed".into(),
        ));
    }
    let share = Share::try_from(body).map_err(|e| GatekeeperError::BadUnsealKey(e.into()))?;
    Ok(UnsealKey(share))
}

/// Rebuild the gatekeeper key from at least `threshold` distinct unseal keys.
/// Duplicates and index 0 are refused before blahaj sees them. A wrong (but
/// well-formed) set yields a wrong key, which the caller detects when the key
/// fails to unwrap the root key.
pub fn combine(keys: &[UnsealKey], threshold: u8) -> Result<Key32, GatekeeperError> {
    let mut seen = [false; 256];
    for k in keys {
        let x = k.index();
        if x == 0 {
            return Err(GatekeeperError::BadUnsealKey(
                "share index 0 is not allowed".into(),
            ));
        }
        if std::mem::replace(&mut seen[x as usize], true) {
            return Err(GatekeeperError::DuplicateUnsealKey);
        }
    }
    if keys.len() < threshold as usize {
        return Err(GatekeeperError::NotEnoughKeys {
            have: keys.len(),
            need: threshold as usize,
        });
    }
    let shares: Vec<&Share> = keys.iter().map(|k| &k.0).collect();
    let secret = Zeroizing::new(
        Sharks(threshold)
            .recover(shares)
            .map_err(|e| GatekeeperError::BadUnsealKey(e.into()))?,
    );
    Key32::from_slice(&secret)
        .ok_or_else(|| GatekeeperError::BadUnsealKey("shares have the wrong length".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(keys: &[SecretString]) -> Vec<UnsealKey> {
        keys.iter().map(|k| parse(k.expose()).unwrap()).collect()
    }

    #[test]
    fn any_threshold_subset_rebuilds_the_key() {
        let key = Key32::random();
        let keys = split(&key, 5, 3);
        assert_eq!(keys.len(), 5);
        let parsed = parse_all(&keys);
        let subset: Vec<UnsealKey> = [4, 0, 2]
            .iter()
            .map(|&i| parse(keys[i].expose()).unwrap())
            .collect();
        assert_eq!(combine(&subset, 3).unwrap().as_bytes(), key.as_bytes());
        assert_eq!(combine(&parsed, 3).unwrap().as_bytes(), key.as_bytes());
    }

    #[test]
    fn too_few_keys_are_refused() {
        let keys = parse_all(&split(&Key32::random(), 5, 3));
        let two: Vec<UnsealKey> = keys.into_iter().take(2).collect();
        assert!(matches!(
            combine(&two, 3),
            Err(GatekeeperError::NotEnoughKeys { have: 2, need: 3 })
        ));
    }

    #[test]
    fn duplicated_keys_are_refused() {
        let keys = split(&Key32::random(), 5, 3);
        let dup = vec![
            parse(keys[0].expose()).unwrap(),
            parse(keys[0].expose()).unwrap(),
            parse(keys[1].expose()).unwrap(),
        ];
        assert!(matches!(
            combine(&dup, 3),
            Err(GatekeeperError::DuplicateUnsealKey)
        ));
    }

    #[test]
    fn corrupted_and_zero_index_keys_are_refused() {
        let keys = split(&Key32::random(), 3, 2);
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(keys[0].expose())
            .unwrap();
        raw[5] ^= 1;
        let corrupted = base64::engine::general_purpose::STANDARD.encode(&raw);
        assert!(matches!(
            parse(&corrupted),
            Err(GatekeeperError::BadUnsealKey(_))
        ));
        let mut zero = raw.clone();
        zero[5] ^= 1;
        zero[0] = 0;
        let check = checksum(&zero[..33]);
        zero[33..].copy_from_slice(&check);
        let zero = base64::engine::general_purpose::STANDARD.encode(&zero);
        assert!(matches!(
            parse(&zero),
            Err(GatekeeperError::BadUnsealKey(_))
        ));
        assert!(parse("not base64!").is_err());
        assert!(parse("AAAA").is_err());
    }

    #[test]
    fn one_of_one_works_and_parameters_are_checked() {
        let key = Key32::random();
        let keys = parse_all(&split(&key, 1, 1));
        assert_eq!(combine(&keys, 1).unwrap().as_bytes(), key.as_bytes());
        assert!(check_parameters(5, 3).is_ok());
        assert!(check_parameters(0, 0).is_err());
        assert!(check_parameters(3, 4).is_err());
        assert!(check_parameters(3, 1).is_err());
        assert!(check_parameters(256, 2).is_err());
    }
}
