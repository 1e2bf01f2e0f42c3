//! A workspace's own image: a built-in recipe with more Debian packages, npm packages and
//! shell steps on top, built once and named after what it holds.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::validate::{FieldError, ValidationErrors};

/// The built-in images an extension can start from: only `dev` has apt and npm.
pub const EXTENSIBLE_BASES: &[&str] = &["dev"];
/// Where derived image names start after their base: `dev-ext-<hash>`.
pub const EXTENSION_MARK: &str = "-ext-";

const MAX_ITEMS: usize = 64;
const MAX_RUN_BYTES: usize = 4096;

/// `image: {base: dev, packages: [...], npm: [...], run: [...]}` in a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageExtension {
    /// The built-in image this one extends.
    #[serde(default = "default_base")]
    #[schema(example = "dev")]
    pub base: String,
    /// More Debian packages (`name` or `name=version`), installed with the base's.
    #[serde(default)]
    #[schema(example = json!(["postgresql-client"]))]
    pub packages: Vec<String>,
    /// More npm packages (`name@version`), installed globally.
    #[serde(default)]
    #[schema(example = json!(["pnpm@9.15.0"]))]
    pub npm: Vec<String>,
    /// Shell commands run as root in the new root filesystem, in order, after the
    /// packages (network on: `pip install`, `curl`, … work).
    #[serde(default)]
    #[schema(example = json!(["pip install --break-system-packages ruff==0.8.4"]))]
    pub run: Vec<String>,
}

fn default_base() -> String {
    "dev".to_owned()
}

impl ImageExtension {
    /// Adds nothing to its base.
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty() && self.npm.is_empty() && self.run.is_empty()
    }

    /// The image sandboxes boot: the base itself when nothing is added, else
    /// `<base>-ext-<hash of the additions>`, so equal extensions share one build.
    pub fn image_name(&self) -> String {
        if self.is_empty() {
            return self.base.clone();
        }
        let canonical = serde_json::json!([self.base, self.packages, self.npm, self.run]);
        let digest = Sha256::digest(canonical.to_string().as_bytes());
        let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("{}{EXTENSION_MARK}{hash}", self.base)
    }

    pub fn validate(&self, field: &str, errors: &mut ValidationErrors) {
        if !EXTENSIBLE_BASES.contains(&self.base.as_str()) {
            errors.push(FieldError::new(
                format!("{field}.base"),
                format!(
                    "only {} can be extended (it has apt and npm)",
                    EXTENSIBLE_BASES.join(", ")
                ),
            ));
        }
        let lists = [
            (
                "packages",
                &self.packages,
                is_debian_package as fn(&str) -> bool,
            ),
            ("npm", &self.npm, is_npm_package),
        ];
        for (name, items, ok) in lists {
            if items.len() > MAX_ITEMS {
                errors.push(FieldError::new(
                    format!("{field}.{name}"),
                    format!("at most {MAX_ITEMS} entries"),
                ));
            }
            for (i, item) in items.iter().enumerate() {
                if !ok(item) {
                    errors.push(FieldError::new(
                        format!("{field}.{name}[{i}]"),
                        match name {
                            "packages" => "must be a Debian package name, optionally =version",
                            _ => "must be an npm package: name or @scope/name, optionally @version",
                        },
                    ));
                }
            }
        }
        if self.run.len() > MAX_ITEMS {
            errors.push(FieldError::new(
                format!("{field}.run"),
                format!("at most {MAX_ITEMS} commands"),
            ));
        }
        for (i, cmd) in self.run.iter().enumerate() {
            if cmd.trim().is_empty() || cmd.len() > MAX_RUN_BYTES || cmd.contains('\0') {
                errors.push(FieldError::new(
                    format!("{field}.run[{i}]"),
                    format!("must be a non-empty shell command of at most {MAX_RUN_BYTES} bytes"),
                ));
            }
        }
    }
}

/// Whether `name` is the name of an extension's build (`dev-ext-…`), and of which base.
pub fn extension_base(name: &str) -> Option<&str> {
    let (base, hash) = name.split_once(EXTENSION_MARK)?;
    (EXTENSIBLE_BASES.contains(&base)
        && hash.len() == 12
        && hash
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then_some(base)
}

/// Debian policy: lowercase letters, digits, `+ - .`, at least two characters, starting
/// with a letter or digit; a version after `=` of letters, digits and `. + ~ : -`.
fn is_debian_package(spec: &str) -> bool {
    let (name, version) = match spec.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    };
    let name_ok = name.len() >= 2
        && name.len() <= 128
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    let version_ok = version.is_none_or(|v| {
        !v.is_empty()
            && v.len() <= 128
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".+~:-".contains(&b))
    });
    name_ok && version_ok
}

/// An npm package spec without anything a shell or npm would read as more than one
/// registry package: `[@scope/]name[@version-or-range]`.
fn is_npm_package(spec: &str) -> bool {
    let (scope, rest) = match spec.strip_prefix('@') {
        Some(s) => match s.split_once('/') {
            Some((scope, rest)) => (Some(scope), rest),
            None => return false,
        },
        None => (None, spec),
    };
    let (name, version) = match rest.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (rest, None),
    };
    let part = |s: &str| {
        !s.is_empty()
            && s.len() <= 214
            && !s.starts_with(['.', '_'])
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._~".contains(&b))
    };
    scope.is_none_or(part)
        && part(name)
        && version.is_none_or(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-+^~<>=*".contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(packages: &[&str], npm: &[&str], run: &[&str]) -> ImageExtension {
        ImageExtension {
            base: "dev".into(),
            packages: packages.iter().map(|s| s.to_string()).collect(),
            npm: npm.iter().map(|s| s.to_string()).collect(),
            run: run.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn fields(e: &ImageExtension) -> Vec<String> {
        let mut errors = ValidationErrors::default();
        e.validate("image", &mut errors);
        errors.into_vec().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn the_name_follows_what_is_added_and_is_the_base_when_nothing_is() {
        let a = ext(&["tree"], &["is-number@7.0.0"], &["echo hi"]);
        let name = a.image_name();
        assert!(name.starts_with("dev-ext-"), "{name}");
        assert_eq!(extension_base(&name), Some("dev"));
        assert_eq!(name, a.clone().image_name(), "stable");
        assert_ne!(name, ext(&["tree"], &[], &["echo hi"]).image_name());
        assert_eq!(ext(&[], &[], &[]).image_name(), "dev");
        let mut errors = ValidationErrors::default();
        crate::workspace::validate_image("image", &name, &mut errors);
        assert!(
            errors.into_vec().is_empty(),
            "a derived name is an image name"
        );
    }

    #[test]
    fn every_bad_entry_is_named_by_its_field() {
        assert!(fields(&ext(
            &["tree", "postgresql-client=15.8-0+deb12u1"],
            &["pnpm@9.15.0", "@scope/pkg@^1.2"],
            &["pip install x"]
        ))
        .is_empty());
        let mut bad = ext(
            &["Tree", "x; rm -rf /"],
            &["a b", "@scope", "../x", "ok@1 2"],
            &["", "  "],
        );
        bad.base = "minimal".into();
        assert_eq!(
            fields(&bad),
            vec![
                "image.base",
                "image.packages[0]",
                "image.packages[1]",
                "image.npm[0]",
                "image.npm[1]",
                "image.npm[2]",
                "image.npm[3]",
                "image.run[0]",
                "image.run[1]",
            ]
        );
        assert_eq!(extension_base("dev-ext-zz"), None);
        assert_eq!(extension_base("minimal-ext-0123456789ab"), None);
    }
}
