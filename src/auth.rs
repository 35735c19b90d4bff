//! Authenticated heartbeats: the key ring, and the HMAC-SHA256 that signs and verifies a frame.
//! Pure (the key file is read by `main`; this parses its text).
//!
//! The key file has one key a line, `<id> <64 hex digits>` (id 1 to 255, 32 bytes of key), `#`
//! starts a comment. The **first** key signs; **every** key verifies: to rotate, add the new key
//! as a second line on every gateway, then move it first on every gateway, then remove the old
//! one; no step needs all gateways at once (docs/security.md).

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

/// Length of the HMAC-SHA256 trailer.
pub const MAC_LEN: usize = 32;
/// Length of a key.
pub const KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// How strictly frames are checked once a key is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Every frame must be signed with a known key.
    Require,
    /// Sign our frames; accept unsigned ones too (rolling a key out one gateway at a time);
    /// a signed frame must still verify.
    Transition,
}

/// Why a key file was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("line {line}: expected '<id> <64 hex digits>'")]
    Syntax { line: usize },
    #[error("line {line}: key id must be 1 to 255")]
    BadId { line: usize },
    #[error("line {line}: the key must be 64 hex digits (32 bytes)")]
    BadKey { line: usize },
    #[error("line {line}: key id {id} appears twice")]
    DuplicateId { line: usize, id: u8 },
    #[error("no key in the file")]
    Empty,
}

/// Why a frame failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// Signed with a key id we do not have.
    UnknownKey(u8),
    /// The MAC does not match: forged, altered, or signed with another key under that id.
    BadMac,
}

impl AuthError {
    pub fn kind(&self) -> &'static str {
        match self {
            AuthError::UnknownKey(_) => "unknown_key",
            AuthError::BadMac => "bad_mac",
        }
    }
}

/// The configured keys, the signing one first.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    keys: Vec<(u8, [u8; KEY_LEN])>,
}

impl fmt::Debug for Keys {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("Keys").field("ids", &ids).finish()
    }
}

impl Keys {
    /// Parses a key file's text.
    pub fn parse(text: &str) -> Result<Keys, KeyError> {
        let mut keys: Vec<(u8, [u8; KEY_LEN])> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let mut words = content.split_whitespace();
            let (Some(id), Some(hex), None) = (words.next(), words.next(), words.next()) else {
                return Err(KeyError::Syntax { line });
            };
            let id: u8 = id
                .parse()
                .ok()
                .filter(|&id| id != 0)
                .ok_or(KeyError::BadId { line })?;
            let key = parse_hex(hex).ok_or(KeyError::BadKey { line })?;
            if keys.iter().any(|(k, _)| *k == id) {
                return Err(KeyError::DuplicateId { line, id });
            }
            keys.push((id, key));
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Keys { keys })
    }

    /// The id of the key that signs.
    pub fn signing_id(&self) -> u8 {
        self.keys[0].0
    }

    /// Every key id, the signing one first.
    pub fn ids(&self) -> impl Iterator<Item = u8> + '_ {
        self.keys.iter().map(|(id, _)| *id)
    }

    fn key(&self, id: u8) -> Option<&[u8; KEY_LEN]> {
        self.keys.iter().find(|(k, _)| *k == id).map(|(_, key)| key)
    }

    /// The MAC of `signed` (the frame up to its trailer) with the signing key.
    pub fn sign(&self, signed: &[u8]) -> [u8; MAC_LEN] {
        let (_, key) = &self.keys[0];
        mac(key, signed)
    }

    /// Checks `mac` over `signed` with key `id`, in constant time.
    pub fn verify(&self, id: u8, signed: &[u8], mac_bytes: &[u8]) -> Result<(), AuthError> {
        let key = self.key(id).ok_or(AuthError::UnknownKey(id))?;
        let mut m = <HmacSha256 as Mac>::new_from_slice(key).map_err(|_| AuthError::BadMac)?;
        m.update(signed);
        m.verify_slice(mac_bytes).map_err(|_| AuthError::BadMac)
    }
}

fn mac(key: &[u8; KEY_LEN], data: &[u8]) -> [u8; MAC_LEN] {
    // HMAC takes keys of any length: this cannot fail.
    let mut m = match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; MAC_LEN],
    };
    m.update(data);
    m.finalize().into_bytes().into()
}

fn parse_hex(s: &str) -> Option<[u8; KEY_LEN]> {
    if s.len() != 2 * KEY_LEN || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; KEY_LEN];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
