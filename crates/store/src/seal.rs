//! Sealing of secrets at rest with an AEAD (XChaCha20-Poly1305) and a key kept 0600.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::{Result, StoreError};

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// Seals and opens small values. Sealed form: `nonce (24 bytes) || ciphertext+tag`.
#[derive(Clone)]
pub struct Sealer {
    cipher: Arc<XChaCha20Poly1305>,
}

impl Sealer {
    /// Reads the key at `path`, or creates it (0600, random) when absent.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        let key_err = |reason: String| StoreError::Key {
            path: path.display().to_string(),
            reason,
        };
        let key = match std::fs::read(path) {
            Ok(bytes) => {
                let mode = std::fs::metadata(path)
                    .map_err(|e| key_err(e.to_string()))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(key_err(format!(
                        "mode is {:o}; it must not be readable by others (chmod 600)",
                        mode & 0o777
                    )));
                }
                bytes
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0u8; KEY_LEN];
                rand::thread_rng().fill_bytes(&mut key);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| key_err(e.to_string()))?;
                f.write_all(&key)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| key_err(e.to_string()))?;
                key
            }
            Err(e) => return Err(key_err(e.to_string())),
        };
        if key.len() != KEY_LEN {
            return Err(key_err(format!(
                "expected {KEY_LEN} bytes, found {}",
                key.len()
            )));
        }
        let cipher = XChaCha20Poly1305::new_from_slice(&key).map_err(|e| key_err(e.to_string()))?;
        Ok(Self {
            cipher: Arc::new(cipher),
        })
    }

    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        // Encryption with a valid key and nonce length cannot fail.
        let ciphertext = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return Err(StoreError::Unseal);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| StoreError::Unseal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_round_trip_and_the_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let s = Sealer::load_or_create(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let sealed = s.seal(b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_ne!(sealed, s.seal(b"hunter2"), "nonces are fresh");
        let again = Sealer::load_or_create(&path).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), b"hunter2");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(again.open(&tampered).is_err());
    }

    #[test]
    fn a_world_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        Sealer::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Sealer::load_or_create(&path).err().unwrap();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
