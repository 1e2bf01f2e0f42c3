//! What a VM driver boots: a kernel, an initramfs and a root filesystem image.

use std::path::PathBuf;

use crate::driver::VmmError;

/// The files of one built image, ready to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArtifacts {
    /// Compressed kernel (bzImage) for QEMU.
    pub bzimage: PathBuf,
    /// Uncompressed ELF kernel for Firecracker.
    pub vmlinux: PathBuf,
    /// Initramfs (newc cpio, gzip) that loads the virtio modules and switches to the root.
    pub initramfs: PathBuf,
    /// ext4 root filesystem; drivers give every sandbox its own copy (or overlay).
    pub rootfs: PathBuf,
}

/// Resolves an image name (`minimal`, `dev`…) to its built artifacts.
pub trait ImageResolver: Send + Sync + 'static {
    fn resolve(&self, image: &str) -> Result<BootArtifacts, VmmError>;
}
