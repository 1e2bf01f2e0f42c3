//! Identifiers. They are short, lowercase and DNS-safe because they appear in
//! per-sandbox host names (`<name>-<id>.<domain>`) and in paths on the host.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Alphabet of generated ids: lowercase letters and digits, minus look-alikes.
const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
const LEN: usize = 12;

fn generate(prefix: char) -> String {
    let mut rng = rand::thread_rng();
    let mut out = String::with_capacity(LEN);
    out.push(prefix);
    for _ in 1..LEN {
        out.push(ALPHABET[rng.gen_range(0..ALPHABET.len())] as char);
    }
    out
}

/// True when `s` has the shape of an id this crate generates with `prefix`.
fn well_formed(s: &str, prefix: char) -> bool {
    s.len() == LEN && s.starts_with(prefix) && s.bytes().all(|b| ALPHABET.contains(&b))
}

macro_rules! id_type {
    ($name:ident, $prefix:literal, $what:literal) => {
        #[doc = concat!("Identifier of a ", $what, ".")]
        #[derive(
            Debug,
            Clone,
            PartialEq,
            Eq,
            Hash,
            PartialOrd,
            Ord,
            Serialize,
            Deserialize,
            utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[schema(value_type = String, example = json!(concat!($prefix, "k3m9xq2v7pza")))]
        pub struct $name(String);

        impl $name {
            /// A fresh random id.
            pub fn generate() -> Self {
                Self(generate($prefix.chars().next().unwrap_or('x')))
            }

            /// Parses an id given by a user; `None` when it cannot be one of ours.
            pub fn parse(s: &str) -> Option<Self> {
                well_formed(s, $prefix.chars().next().unwrap_or('x')).then(|| Self(s.to_owned()))
            }

            /// Wraps a value read back from our own store without checking it.
            pub fn from_trusted(s: String) -> Self {
                Self(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(SandboxId, "s", "sandbox");
id_type!(WorkspaceId, "w", "workspace");
id_type!(TaskId, "t", "task");
id_type!(PrebuildId, "p", "prebuild");

/// A random secret token (hex, 256 bits) for API and agent authentication.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back_and_are_distinct() {
        let a = SandboxId::generate();
        let b = SandboxId::generate();
        assert_ne!(a, b);
        assert_eq!(SandboxId::parse(a.as_str()), Some(a.clone()));
        assert!(a.as_str().starts_with('s'));
        assert!(
            WorkspaceId::parse(a.as_str()).is_none(),
            "prefix distinguishes kinds"
        );
    }

    #[test]
    fn parse_rejects_foreign_shapes() {
        for bad in [
            "",
            "s",
            "s../../etc/p",
            "SABCDEFGHJKM",
            "sabcdefghjk1",
            "sabcdefghjkmn",
        ] {
            assert!(SandboxId::parse(bad).is_none(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn tokens_are_long_and_random() {
        let t = random_token();
        assert_eq!(t.len(), 64);
        assert_ne!(t, random_token());
    }
}
