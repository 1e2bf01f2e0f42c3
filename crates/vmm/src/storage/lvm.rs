//! LVM thin snapshots: every clone is `lvcreate -s -kn -n <name> <vg>/<base>` in a thin
//! pool, O(1) whatever the base's size, opened by the VMM as the raw block device
//! `/dev/<vg>/<name>`. Used only when configured (a volume group and thin pool named).
//!
//! Base and clone names may be given as `name`, `<vg>/name` or `/dev/<vg>/name`; both must
//! live in the configured volume group, and the base must be a thin volume of the pool.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::command::{argv, command_error, run_checked, spawn_error, CommandRunner, SystemRunner};
use super::{
    check_kind, DiskFormat, DiskHandle, DiskUsage, PoolUsage, StorageBackend, StorageError,
    StorageKind,
};

const LVM_HINT: &str = "apt-get install lvm2";
/// The columns every `lvs` query asks for.
const LVS_FIELDS: &str = "lv_name,lv_attr,lv_size,data_percent";

/// Where thin snapshots go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LvmConfig {
    /// The volume group.
    pub vg: String,
    /// The thin pool (a logical volume of `vg`) the bases and their clones live in.
    pub thin_pool: String,
}

/// One row of `lvs`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LvRow {
    pub name: String,
    pub attr: String,
    pub size: u64,
    /// Percent of the volume's size mapped (thin volumes and pools); `None` for others.
    pub data_percent: Option<f64>,
}

impl LvRow {
    fn mapped_bytes(&self) -> u64 {
        let pct = self.data_percent.unwrap_or(0.0).clamp(0.0, 100.0);
        (self.size as f64 * pct / 100.0).round() as u64
    }
}

/// Makes thin snapshots with the LVM command-line tools.
#[derive(Clone)]
pub struct LvmThinBackend {
    config: LvmConfig,
    runner: Arc<dyn CommandRunner>,
}

impl std::fmt::Debug for LvmThinBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LvmThinBackend")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Checks a volume group or logical volume name against LVM's rules (the ones that matter
/// before LVM itself is asked): 1–127 characters of `a-z A-Z 0-9 + _ . -`, not starting
/// with `-`, not `.` or `..`.
fn validate_name(what: &'static str, name: &str) -> Result<(), StorageError> {
    let bad = |reason: &str| StorageError::InvalidName {
        what,
        value: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() || name.len() > 127 {
        return Err(bad("it must have 1 to 127 characters"));
    }
    if name.starts_with('-') {
        return Err(bad("it must not start with '-'"));
    }
    if name == "." || name == ".." {
        return Err(bad("it must not be '.' or '..'"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '_' | '.' | '-')))
    {
        return Err(bad(&format!(
            "{c:?} is not allowed (only letters, digits, '+', '_', '.' and '-')"
        )));
    }
    Ok(())
}

/// Parses the report of `lvs --reportformat json --units b --nosuffix -o …`:
/// `{"report":[{"lv":[{"lv_name":"…","lv_size":"…","data_percent":"…"}]}]}`. Values are
/// strings in the `json` format and may be numbers in `json_std`; both are read.
pub(crate) fn parse_lvs(json: &[u8]) -> Result<Vec<LvRow>, StorageError> {
    let bad = |detail: String| StorageError::Parse {
        what: "lvs".into(),
        detail,
    };
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| bad(format!("not JSON: {e}")))?;
    let reports = v
        .get("report")
        .and_then(|r| r.as_array())
        .ok_or_else(|| bad("no \"report\" array".into()))?;
    let text = |row: &serde_json::Value, key: &str| -> Option<String> {
        match row.get(key)? {
            serde_json::Value::String(s) => Some(s.trim().to_owned()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let mut rows = Vec::new();
    for report in reports {
        let Some(lvs) = report.get("lv").and_then(|l| l.as_array()) else {
            continue;
        };
        for row in lvs {
            let name =
                text(row, "lv_name").ok_or_else(|| bad(format!("a row without lv_name: {row}")))?;
            let size_text =
                text(row, "lv_size").ok_or_else(|| bad(format!("no lv_size for {name}")))?;
            let size = size_text
                .trim_end_matches(['B', 'b'])
                .parse::<u64>()
                .map_err(|_| bad(format!("lv_size of {name} is {size_text:?}, not bytes")))?;
            let data_percent = match text(row, "data_percent") {
                None => None,
                Some(p) if p.is_empty() => None,
                Some(p) => Some(
                    p.trim_end_matches('%')
                        .parse::<f64>()
                        .map_err(|_| bad(format!("data_percent of {name} is {p:?}")))?,
                ),
            };
            rows.push(LvRow {
                name,
                attr: text(row, "lv_attr").unwrap_or_default(),
                size,
                data_percent,
            });
        }
    }
    Ok(rows)
}

/// True when an LVM error message says the volume does not exist.
fn says_not_found(e: &StorageError) -> bool {
    matches!(e, StorageError::Command { stderr, .. }
        if stderr.contains("Failed to find logical volume"))
}

impl LvmThinBackend {
    /// A backend for `config` running the LVM tools on this host. Checks the names only;
    /// [`Self::probe`] checks the pool.
    pub fn new(config: LvmConfig) -> Result<Self, StorageError> {
        Self::with_runner(config, Arc::new(SystemRunner))
    }

    pub fn with_runner(
        config: LvmConfig,
        runner: Arc<dyn CommandRunner>,
    ) -> Result<Self, StorageError> {
        validate_name("volume group", &config.vg)?;
        validate_name("thin pool", &config.thin_pool)?;
        Ok(Self { config, runner })
    }

    pub fn config(&self) -> &LvmConfig {
        &self.config
    }

    /// Checks that `lvs` works and the configured pool is a thin pool; says how full it is.
    pub fn probe(&self) -> Result<String, StorageError> {
        let pool = self.lv(&self.config.thin_pool)?;
        if !pool.attr.starts_with('t') {
            return Err(StorageError::Unsupported {
                kind: StorageKind::LvmThin,
                reason: format!(
                    "{}/{} is not a thin pool (lv_attr {:?})",
                    self.config.vg, pool.name, pool.attr
                ),
            });
        }
        Ok(format!(
            "thin pool {}/{}: {:.1}% of {} bytes used",
            self.config.vg,
            pool.name,
            pool.data_percent.unwrap_or(0.0),
            pool.size
        ))
    }

    /// The LV name `p` stands for, which must be in the configured volume group.
    fn lv_name(&self, what: &'static str, p: &Path) -> Result<String, StorageError> {
        let s = p.to_str().ok_or_else(|| StorageError::InvalidName {
            what,
            value: p.display().to_string(),
            reason: "not UTF-8".into(),
        })?;
        let rest = s.strip_prefix("/dev/").unwrap_or(s);
        let name = match rest.split_once('/') {
            None => rest,
            Some((vg, name)) if vg == self.config.vg && !name.contains('/') => name,
            Some(_) => {
                return Err(StorageError::InvalidName {
                    what,
                    value: s.to_owned(),
                    reason: format!(
                        "expected NAME, {vg}/NAME or /dev/{vg}/NAME (volume group {vg})",
                        vg = self.config.vg
                    ),
                })
            }
        };
        validate_name(what, name)?;
        Ok(name.to_owned())
    }

    fn qualified(&self, name: &str) -> String {
        format!("{}/{}", self.config.vg, name)
    }

    fn device(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/dev/{}/{}", self.config.vg, name))
    }

    fn run(&self, program: &str, args: &[OsString]) -> Result<Vec<u8>, StorageError> {
        run_checked(self.runner.as_ref(), program, args, LVM_HINT).map(|o| o.stdout)
    }

    /// `lvs` of one logical volume.
    fn lv(&self, name: &str) -> Result<LvRow, StorageError> {
        let target = self.qualified(name);
        let args = argv![
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            LVS_FIELDS,
            &target
        ];
        let out = self
            .runner
            .run("lvs", &args)
            .map_err(|e| spawn_error("lvs", &args, LVM_HINT, e))?;
        if !out.success() {
            let e = command_error("lvs", &args, &out);
            return Err(if says_not_found(&e) {
                StorageError::NotFound(self.device(name))
            } else {
                e
            });
        }
        parse_lvs(&out.stdout)?
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| StorageError::Parse {
                what: "lvs".into(),
                detail: format!("no row for {target}"),
            })
    }
}

impl StorageBackend for LvmThinBackend {
    fn kind(&self) -> StorageKind {
        StorageKind::LvmThin
    }

    fn clone_disk(
        &self,
        base: &Path,
        dest: &Path,
        size_bytes: Option<u64>,
    ) -> Result<DiskHandle, StorageError> {
        let base_name = self.lv_name("base volume", base)?;
        let name = self.lv_name("disk volume", dest)?;
        let grow_to = match size_bytes {
            None => None,
            Some(requested) => {
                let base_size = self.lv(&base_name)?.size;
                if requested < base_size {
                    return Err(StorageError::InvalidSize {
                        requested,
                        base: base_size,
                    });
                }
                (requested > base_size).then_some(requested)
            }
        };
        let base_q = self.qualified(&base_name);
        self.run("lvcreate", &argv!["-s", "-kn", "-n", &name, &base_q])
            .map_err(|e| match e {
                StorageError::Command { ref stderr, .. } if stderr.contains("already exists") => {
                    StorageError::AlreadyExists(self.device(&name))
                }
                ref e if says_not_found(e) => StorageError::NotFound(self.device(&base_name)),
                e => e,
            })?;
        if let Some(size) = grow_to {
            let grown = self.run(
                "lvextend",
                &argv!["-L", format!("{size}b"), self.qualified(&name)],
            );
            if let Err(e) = grown {
                let _ = self.run("lvremove", &argv!["-f", self.qualified(&name)]);
                return Err(e);
            }
        }
        Ok(DiskHandle {
            kind: StorageKind::LvmThin,
            path: self.device(&name),
            format: DiskFormat::Raw,
            backing: None,
        })
    }

    fn remove(&self, disk: &DiskHandle) -> Result<(), StorageError> {
        check_kind(StorageKind::LvmThin, disk)?;
        let name = self.lv_name("disk volume", &disk.path)?;
        match self.run("lvremove", &argv!["-f", self.qualified(&name)]) {
            Ok(_) => Ok(()),
            Err(e) if says_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// An upper bound: the snapshot's *mapped* bytes (`data_percent` × size), which
    /// include the blocks it still shares with its base. LVM's tools report no exclusive
    /// figure per thin volume (only `thin_ls` on a metadata snapshot does), so
    /// `exact` is false.
    fn disk_usage(&self, disk: &DiskHandle) -> Result<DiskUsage, StorageError> {
        check_kind(StorageKind::LvmThin, disk)?;
        let name = self.lv_name("disk volume", &disk.path)?;
        Ok(DiskUsage {
            own_bytes: self.lv(&name)?.mapped_bytes(),
            exact: false,
        })
    }

    fn pool_usage(&self) -> Result<PoolUsage, StorageError> {
        let pool = self.lv(&self.config.thin_pool)?;
        Ok(PoolUsage {
            used_bytes: pool.mapped_bytes(),
            total_bytes: pool.size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::command::fake::{Answer, FakeRunner};
    use super::*;

    const LVS_POOL: &str = r#"  {
      "report": [
          {
              "lv": [
                  {"lv_name":"pool", "lv_attr":"twi-aotz--", "lv_size":"107374182400", "data_percent":"12.50"}
              ]
          }
      ]
  }
"#;
    const LVS_BASE: &str = r#"{"report":[{"lv":[{"lv_name":"base", "lv_attr":"Vwi-a-tz--", "lv_size":"4294967296", "data_percent":"40.00"}]}]}"#;
    const LVS_SNAP: &str = r#"{"report":[{"lv":[{"lv_name":"sb-1", "lv_attr":"Vwi-a-tz-k", "lv_size":"4294967296", "data_percent":"41.25"}]}]}"#;

    fn backend(runner: &Arc<FakeRunner>) -> LvmThinBackend {
        LvmThinBackend::with_runner(
            LvmConfig {
                vg: "vg0".into(),
                thin_pool: "pool".into(),
            },
            runner.clone(),
        )
        .unwrap()
    }

    const LVS: &str =
        "lvs --reportformat json --units b --nosuffix -o lv_name,lv_attr,lv_size,data_percent";

    #[test]
    fn parses_lvs_json_in_both_flavours() {
        let rows = parse_lvs(LVS_POOL.as_bytes()).unwrap();
        assert_eq!(
            rows,
            vec![LvRow {
                name: "pool".into(),
                attr: "twi-aotz--".into(),
                size: 107_374_182_400,
                data_percent: Some(12.5),
            }]
        );
        assert_eq!(rows[0].mapped_bytes(), 13_421_772_800);
        // json_std: numbers as numbers, a thick LV without data_percent, a log section.
        let std = br#"{"report":[{"lv":[{"lv_name":"root","lv_attr":"-wi-ao----","lv_size":8589934592,"data_percent":null},
                                         {"lv_name":"t","lv_attr":"Vwi-a-tz--","lv_size":"1024B","data_percent":""}]}],
                       "log":[{"log_seq_num":1}]}"#;
        let rows = parse_lvs(std).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].size, 8_589_934_592);
        assert_eq!(rows[0].data_percent, None);
        assert_eq!(rows[1].size, 1024);
        assert_eq!(rows[1].mapped_bytes(), 0);
    }

    #[test]
    fn refuses_lvs_output_it_cannot_read() {
        for bad in [
            &b"  Volume group \"vg0\" not found"[..],
            br#"{"lvs":[]}"#,
            br#"{"report":[{"lv":[{"lv_size":"1"}]}]}"#,
            br#"{"report":[{"lv":[{"lv_name":"a","lv_size":"12.00g"}]}]}"#,
            br#"{"report":[{"lv":[{"lv_name":"a","lv_size":"1","data_percent":"lots"}]}]}"#,
        ] {
            let e = parse_lvs(bad).unwrap_err();
            assert!(matches!(e, StorageError::Parse { .. }), "{e}");
        }
    }

    #[test]
    fn clones_are_thin_snapshots_with_the_exact_argv() {
        let runner =
            Arc::new(FakeRunner::new().ok("lvcreate", "  Logical volume \"sb-1\" created.\n"));
        let disk = backend(&runner)
            .clone_disk(Path::new("/dev/vg0/base"), Path::new("sb-1"), None)
            .unwrap();
        assert_eq!(runner.calls(), vec!["lvcreate -s -kn -n sb-1 vg0/base"]);
        assert_eq!(
            disk,
            DiskHandle {
                kind: StorageKind::LvmThin,
                path: "/dev/vg0/sb-1".into(),
                format: DiskFormat::Raw,
                backing: None,
            }
        );
    }

    #[test]
    fn a_larger_clone_is_extended_and_rolled_back_if_that_fails() {
        let runner = Arc::new(
            FakeRunner::new()
                .ok("lvs", LVS_BASE)
                .ok("lvcreate", "")
                .ok("lvextend", ""),
        );
        backend(&runner)
            .clone_disk(
                Path::new("vg0/base"),
                Path::new("/dev/vg0/sb-1"),
                Some(10 << 30),
            )
            .unwrap();
        assert_eq!(
            runner.calls(),
            vec![
                format!("{LVS} vg0/base"),
                "lvcreate -s -kn -n sb-1 vg0/base".into(),
                "lvextend -L 10737418240b vg0/sb-1".into(),
            ]
        );

        let runner = Arc::new(
            FakeRunner::new()
                .ok("lvs", LVS_BASE)
                .ok("lvcreate", "")
                .fail("lvextend", 5, "  Insufficient free space")
                .ok("lvremove", ""),
        );
        let e = backend(&runner)
            .clone_disk(Path::new("base"), Path::new("sb-1"), Some(10 << 30))
            .unwrap_err();
        assert!(e.to_string().contains("Insufficient free space"), "{e}");
        assert_eq!(runner.calls()[3], "lvremove -f vg0/sb-1");
        assert_eq!(runner.unanswered(), 0);
    }

    #[test]
    fn a_clone_smaller_than_its_base_is_refused_before_lvcreate() {
        let runner = Arc::new(FakeRunner::new().ok("lvs", LVS_BASE));
        let e = backend(&runner)
            .clone_disk(Path::new("base"), Path::new("sb-1"), Some(1 << 30))
            .unwrap_err();
        assert!(
            matches!(
                e,
                StorageError::InvalidSize {
                    requested: 1073741824,
                    base: 4294967296
                }
            ),
            "{e}"
        );
        assert_eq!(runner.calls().len(), 1);
    }

    #[test]
    fn lvm_failures_map_to_what_went_wrong() {
        let runner = Arc::new(FakeRunner::new().fail(
            "lvcreate",
            5,
            "  Logical Volume \"sb-1\" already exists in volume group \"vg0\"",
        ));
        let e = backend(&runner)
            .clone_disk(Path::new("base"), Path::new("sb-1"), None)
            .unwrap_err();
        assert!(
            matches!(e, StorageError::AlreadyExists(ref p) if p == Path::new("/dev/vg0/sb-1")),
            "{e}"
        );

        let runner = Arc::new(FakeRunner::new().fail(
            "lvcreate",
            5,
            "  Failed to find logical volume \"vg0/base\"",
        ));
        let e = backend(&runner)
            .clone_disk(Path::new("base"), Path::new("sb-1"), None)
            .unwrap_err();
        assert!(
            matches!(e, StorageError::NotFound(ref p) if p == Path::new("/dev/vg0/base")),
            "{e}"
        );

        let runner = Arc::new(FakeRunner::new().expect("lvcreate", Answer::NotInstalled));
        let e = backend(&runner)
            .clone_disk(Path::new("base"), Path::new("sb-1"), None)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "lvcreate is not installed (apt-get install lvm2)"
        );
    }

    #[test]
    fn names_outside_the_volume_group_or_lvm_s_rules_are_refused() {
        let runner = Arc::new(FakeRunner::new());
        let b = backend(&runner);
        for (base, dest) in [
            ("/dev/vg1/base", "sb-1"),
            ("base", "other/sb-1"),
            ("base", "-rf"),
            ("base", "a b"),
            ("base", ".."),
            ("base", "/dev/vg0/x/y"),
        ] {
            let e = b
                .clone_disk(Path::new(base), Path::new(dest), None)
                .unwrap_err();
            assert!(
                matches!(e, StorageError::InvalidName { .. }),
                "{base} {dest}: {e}"
            );
        }
        assert!(runner.calls().is_empty(), "nothing ran");
        assert!(LvmThinBackend::with_runner(
            LvmConfig {
                vg: "vg;rm".into(),
                thin_pool: "pool".into()
            },
            runner.clone()
        )
        .is_err());
    }

    #[test]
    fn removal_is_idempotent() {
        let runner = Arc::new(
            FakeRunner::new()
                .ok(
                    "lvremove",
                    "  Logical volume \"sb-1\" successfully removed.",
                )
                .fail(
                    "lvremove",
                    5,
                    "  Failed to find logical volume \"vg0/sb-1\"",
                )
                .fail("lvremove", 5, "  Logical volume vg0/sb-1 in use."),
        );
        let b = backend(&runner);
        let disk = DiskHandle {
            kind: StorageKind::LvmThin,
            path: "/dev/vg0/sb-1".into(),
            format: DiskFormat::Raw,
            backing: None,
        };
        b.remove(&disk).unwrap();
        b.remove(&disk).unwrap();
        let e = b.remove(&disk).unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
        assert_eq!(runner.calls(), vec!["lvremove -f vg0/sb-1"; 3]);
    }

    #[test]
    fn usage_comes_from_lvs() {
        let runner = Arc::new(FakeRunner::new().ok("lvs", LVS_SNAP).ok("lvs", LVS_POOL));
        let b = backend(&runner);
        let disk = DiskHandle {
            kind: StorageKind::LvmThin,
            path: "/dev/vg0/sb-1".into(),
            format: DiskFormat::Raw,
            backing: None,
        };
        let u = b.disk_usage(&disk).unwrap();
        assert_eq!(u.own_bytes, 1_771_674_010); // 41.25% of 4 GiB, rounded
        assert!(!u.exact, "mapped bytes include shared ones");
        let p = b.pool_usage().unwrap();
        assert_eq!(p.total_bytes, 107_374_182_400);
        assert_eq!(p.used_bytes, 13_421_772_800);
        assert_eq!(
            runner.calls(),
            vec![format!("{LVS} vg0/sb-1"), format!("{LVS} vg0/pool")]
        );
    }

    #[test]
    fn the_probe_wants_a_thin_pool() {
        let runner = Arc::new(FakeRunner::new().ok("lvs", LVS_POOL));
        let s = backend(&runner).probe().unwrap();
        assert_eq!(s, "thin pool vg0/pool: 12.5% of 107374182400 bytes used");
        let runner = Arc::new(FakeRunner::new().ok(
            "lvs",
            r#"{"report":[{"lv":[{"lv_name":"pool","lv_attr":"-wi-a-----","lv_size":"1","data_percent":""}]}]}"#,
        ));
        let e = backend(&runner).probe().unwrap_err();
        assert!(e.to_string().contains("is not a thin pool"), "{e}");
        let runner = Arc::new(FakeRunner::new().fail("lvs", 5, "  Volume group \"vg0\" not found"));
        let e = backend(&runner).probe().unwrap_err();
        assert!(
            e.to_string().ends_with("Volume group \"vg0\" not found"),
            "{e}"
        );
        let runner = Arc::new(FakeRunner::new().fail(
            "lvs",
            5,
            "  Failed to find logical volume \"vg0/pool\"",
        ));
        let e = backend(&runner).probe().unwrap_err();
        assert!(
            matches!(e, StorageError::NotFound(ref p) if p == Path::new("/dev/vg0/pool")),
            "{e}"
        );
    }
}
