//! The initramfs Atelier generates (no dracut or initramfs-tools on the host): a static
//! busybox, the virtio and vsock modules this kernel needs (in dependency order), and an
//! `/init` that loads them, mounts the root disk and hands over to `atelier-agent`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;

use super::ImageError;

/// Modules the guest needs; their dependencies are added from each module's own
/// `depends=` info (Debian's package carries no `modules.dep`).
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio_rng",
    "vmw_vsock_virtio_transport",
    // Shared folders: virtio-fs (needs fuse), and 9p where the kernel has it (Debian's
    // cloud kernel does not; names a kernel lacks are skipped).
    "virtiofs",
    "9pnet_virtio",
    "9p",
];

/// What `/init` prints, then powers off, when the kernel command line has `atelier.probe`
/// (used to test whether an accelerator boots this kernel at all).
pub const PROBE_MARKER: &str = "ATELIER_PROBE_OK";

pub const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Module parameters on the kernel command line (e.g. Firecracker's virtio_mmio.device=…)
# are applied by modprobe, not insmod: pass them along, or load plainly if refused.
for m in $(cat /etc/modules); do
  args=$(tr ' ' '\n' < /proc/cmdline | sed -n "s/^$m\.//p" | tr '\n' ' ')
  insmod "/lib/modules/$m.ko" $args 2>/dev/null || insmod "/lib/modules/$m.ko" 2>/dev/null
done
# `reboot -f` ends the VM under both QEMU (-no-reboot) and Firecracker (reboot=k).
if grep -q atelier.probe /proc/cmdline; then echo __MARKER__; reboot -f; fi
fail() { echo "atelier-init: $*"; sleep 1; reboot -f; }
n=0
while [ ! -b /dev/vda ] || [ ! -b /dev/vdb ]; do
  n=$((n + 1)); [ $n -gt 400 ] && fail "the root and config disks did not appear"
  sleep 0.05
done
mount -t ext4 -o rw,noatime /dev/vda /newroot || fail "cannot mount the root disk"
for d in dev proc sys run tmp; do mkdir -p /newroot/$d; done
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
exec switch_root /newroot /usr/local/bin/atelier-agent --guest-config /dev/vdb
"#;

/// Module name → path of its `.ko` under `modules_dir` (the `…/lib/modules/<version>`).
fn index_modules(modules_dir: &Path) -> Result<BTreeMap<String, PathBuf>, ImageError> {
    let mut index = BTreeMap::new();
    let mut stack = vec![modules_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(ImageError::io(format!("reading {}", dir.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko"))
            {
                index.insert(name.replace('-', "_"), path);
            }
        }
    }
    Ok(index)
}

/// The `depends=` of a module file (comma-separated module names).
fn module_depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    let Some(at) = ko.windows(key.len()).position(|w| w == key) else {
        return vec![];
    };
    let rest = &ko[at + key.len()..];
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace('-', "_"))
        .collect()
}

/// Modules to load, dependencies first, and the file of each.
pub fn resolve_modules(
    modules_dir: &Path,
    wanted: &[&str],
) -> Result<Vec<(String, PathBuf)>, ImageError> {
    let index = index_modules(modules_dir)?;
    let mut order = vec![];
    let mut seen = BTreeSet::new();
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<(String, PathBuf)>,
    ) -> Result<(), ImageError> {
        if !seen.insert(name.to_owned()) {
            return Ok(());
        }
        let path = index.get(name).ok_or_else(|| {
            ImageError::Kernel(format!("module {name} is not in the kernel package"))
        })?;
        let bytes =
            std::fs::read(path).map_err(ImageError::io(format!("reading {}", path.display())))?;
        for dep in module_depends(&bytes) {
            visit(&dep, index, seen, order)?;
        }
        order.push((name.to_owned(), path.clone()));
        Ok(())
    }
    for name in wanted {
        // A module built into this kernel needs no file.
        if index.contains_key(*name) {
            visit(name, &index, &mut seen, &mut order)?;
        }
    }
    Ok(order)
}

/// A `newc` cpio archive writer.
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, S_IFDIR | 0o755, &[], (0, 0));
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, S_IFREG | mode, data, (0, 0));
    }

    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | 0o600, &[], (major, minor));
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.out
    }
}

/// Builds the gzip'd initramfs.
pub fn build(busybox: &[u8], modules: &[(String, PathBuf)]) -> Result<Vec<u8>, ImageError> {
    let mut cpio = Cpio::default();
    for d in [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "newroot",
        "proc",
        "sys",
    ] {
        cpio.dir(d);
    }
    cpio.char_device("dev/console", 5, 1);
    cpio.file("bin/busybox", 0o755, busybox);
    cpio.file(
        "init",
        0o755,
        INIT.replace("__MARKER__", PROBE_MARKER).as_bytes(),
    );
    let mut list = String::new();
    for (name, path) in modules {
        let bytes =
            std::fs::read(path).map_err(ImageError::io(format!("reading {}", path.display())))?;
        cpio.file(&format!("lib/modules/{name}.ko"), 0o644, &bytes);
        list.push_str(name);
        list.push('\n');
    }
    cpio.file("etc/modules", 0o644, list.as_bytes());
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&cpio.finish())
        .map_err(ImageError::io("compressing the initramfs"))?;
    gz.finish()
        .map_err(ImageError::io("compressing the initramfs"))
}

/// True when `elf` is an executable with no dynamic loader (no `PT_INTERP`).
pub fn is_static_elf(elf: &[u8]) -> bool {
    if elf.len() < 64 || elf[..4] != [0x7f, b'E', b'L', b'F'] || elf[4] != 2 {
        return false;
    }
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&elf[at..at + 8]);
        u64::from_le_bytes(b) as usize
    };
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        at + 4 <= elf.len()
            && u32::from_le_bytes([elf[at], elf[at + 1], elf[at + 2], elf[at + 3]]) != 3
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned_and_terminated() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("init", 0o755, b"#!/bin/sh\n");
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("init\0")
                && text.contains("#!/bin/sh\n")
                && text.contains("TRAILER!!!\0")
        );
        // The file entry's size field (7th field) says 10 bytes.
        let file_header = &text[text.find("070701").unwrap() + 110..];
        let second = &file_header[file_header.find("070701").unwrap()..];
        assert_eq!(u32::from_str_radix(&second[54..62], 16).unwrap(), 10);
    }

    #[test]
    fn module_dependencies_come_first() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("kernel/drivers");
        std::fs::create_dir_all(&k).unwrap();
        std::fs::write(k.join("virtio.ko"), b"\0depends=\0").unwrap();
        std::fs::write(k.join("virtio_ring.ko"), b"\0depends=virtio\0").unwrap();
        std::fs::write(
            k.join("virtio_blk.ko"),
            b"junk\0depends=virtio_ring,virtio\0name=virtio_blk",
        )
        .unwrap();
        std::fs::write(k.join("virtio-rng.ko"), b"\0depends=virtio_ring\0").unwrap();
        let order = resolve_modules(
            dir.path(),
            &["virtio_blk", "virtio_rng", "not_built_as_module"],
        )
        .unwrap();
        let names: Vec<_> = order.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["virtio", "virtio_ring", "virtio_blk", "virtio_rng"]);
    }

    #[test]
    fn static_elf_detection() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static_elf(&me), "test binaries are dynamically linked");
        assert!(!is_static_elf(b"#!/bin/sh"));
        if let Ok(busybox) = std::fs::read("/bin/busybox") {
            if is_static_elf(&busybox) {
                eprintln!("host busybox is static");
            }
        }
    }
}
