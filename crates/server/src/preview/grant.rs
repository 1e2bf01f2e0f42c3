//! Signed grants: what opens one port of one sandbox, for how long.
//!
//! A grant is `<kind>.<sandbox>.<port>.<expires>.<mac>`, the MAC an HMAC-SHA256 over the
//! rest under a key kept in the data directory. Nothing is stored per grant, so a
//! restarted manager honours the grants it gave, and a forged or altered one fails the
//! MAC. Every field is in the DNS/URL-safe alphabet, so a grant fits a path, a query and
//! a cookie unescaped.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use atelier_core::SandboxId;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a grant is for; a grant of one kind never passes for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    /// A `/p/<grant>/` link on the manager's own origin.
    Link,
    /// A one-minute hand-off from the dashboard to a preview host, traded for a cookie.
    Handoff,
    /// The cookie a preview host's browser presents on every request.
    Cookie,
}

impl GrantKind {
    fn tag(self) -> &'static str {
        match self {
            Self::Link => "l",
            Self::Handoff => "h",
            Self::Cookie => "c",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub kind: GrantKind,
    pub sandbox: SandboxId,
    pub port: u16,
    /// Seconds since the Unix epoch.
    pub expires: i64,
}

/// The manager's signing key (32 random bytes, `<data-dir>/preview.key`, mode 0600).
pub struct GrantKey([u8; 32]);

impl GrantKey {
    /// Reads the key, creating it on first start.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut key = [0; 32];
                key.copy_from_slice(&bytes);
                return Ok(Self(key));
            }
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a 32-byte key", path.display()),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let key: [u8; 32] = rand::random();
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&key)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(Self(key))
    }

    #[cfg(test)]
    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self(key)
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts 32-byte keys"));
        mac.update(payload.as_bytes());
        mac
    }

    pub fn sign(&self, grant: &Grant) -> String {
        let payload = format!(
            "{}.{}.{}.{}",
            grant.kind.tag(),
            grant.sandbox,
            grant.port,
            grant.expires
        );
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// The grant `token` carries when it is of `kind`, signed by this key and not
    /// expired at `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, kind: GrantKind, now: i64) -> Option<Grant> {
        let (payload, tag) = token.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(payload).verify_slice(&tag).ok()?;
        let mut fields = payload.split('.');
        let (k, sandbox, port, expires) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        if fields.next().is_some() || k != kind.tag() {
            return None;
        }
        let grant = Grant {
            kind,
            sandbox: SandboxId::parse(sandbox)?,
            port: port.parse().ok().filter(|p| *p != 0)?,
            expires: expires.parse().ok()?,
        };
        (grant.expires > now).then_some(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(kind: GrantKind, expires: i64) -> Grant {
        Grant {
            kind,
            sandbox: SandboxId::generate(),
            port: 5173,
            expires,
        }
    }

    #[test]
    fn a_grant_verifies_until_it_expires_and_only_as_its_kind() {
        let key = GrantKey::from_bytes([7; 32]);
        let g = grant(GrantKind::Cookie, 1_000);
        let token = key.sign(&g);
        assert_eq!(key.verify(&token, GrantKind::Cookie, 999), Some(g.clone()));
        assert_eq!(key.verify(&token, GrantKind::Cookie, 1_000), None);
        assert_eq!(key.verify(&token, GrantKind::Handoff, 999), None);
        assert_eq!(key.verify(&token, GrantKind::Link, 999), None);
    }

    #[test]
    fn an_altered_or_foreign_grant_is_refused() {
        let key = GrantKey::from_bytes([7; 32]);
        let g = grant(GrantKind::Cookie, 1_000);
        let token = key.sign(&g);
        // Another port, another expiry, another sandbox: each breaks the MAC.
        let other_port = token.replacen(".5173.", ".5174.", 1);
        assert_eq!(key.verify(&other_port, GrantKind::Cookie, 0), None);
        let later = token.replacen(".1000.", ".9000.", 1);
        assert_eq!(key.verify(&later, GrantKind::Cookie, 0), None);
        let other = grant(GrantKind::Cookie, 1_000);
        let swapped = token.replacen(g.sandbox.as_str(), other.sandbox.as_str(), 1);
        assert_eq!(key.verify(&swapped, GrantKind::Cookie, 0), None);
        // Another manager's key.
        assert_eq!(
            GrantKey::from_bytes([8; 32]).verify(&token, GrantKind::Cookie, 0),
            None
        );
        for junk in ["", ".", "c.x.1.2", "c.x.1.2.!!", &format!("{token}.x")] {
            assert_eq!(key.verify(junk, GrantKind::Cookie, 0), None, "{junk}");
        }
    }

    #[test]
    fn the_key_is_created_once_with_mode_600_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("preview.key");
        let g = grant(GrantKind::Link, i64::MAX);
        let token = GrantKey::load_or_create(&path).unwrap().sign(&g);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = GrantKey::load_or_create(&path).unwrap();
        assert_eq!(again.verify(&token, GrantKind::Link, 0), Some(g));
        std::fs::write(&path, b"short").unwrap();
        assert!(GrantKey::load_or_create(&path).is_err());
    }
}
