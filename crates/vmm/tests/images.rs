//! Builds the real `minimal` image: Debian's cloud kernel (apt-get download + dpkg -x),
//! the vmlinux extracted from it, the generated initramfs, and the busybox root filesystem.

use atelier_vmm::images::{ImageConfig, ImageStore};

use atelier_testkit::image_cache_dir as cached_data_dir;

#[test]
fn the_minimal_image_builds_once_and_is_reused() {
    atelier_testkit::require!(atelier_testkit::missing(&[
        ("apt-get", "apt"),
        ("dpkg", "dpkg"),
        ("mkfs.ext4", "e2fsprogs"),
        ("/bin/busybox", "busybox-static"),
    ]));
    let store = ImageStore::new(&cached_data_dir(), ImageConfig::default());
    let agent = match store.guest_agent() {
        Ok(a) => a,
        Err(e) => panic!("{e} (scripts/test.sh builds it first)"),
    };
    eprintln!("guest agent: {}", agent.display());
    let steps = std::sync::Mutex::new(vec![]);
    let built = store
        .build("minimal", &|m| steps.lock().unwrap().push(m.to_owned()))
        .unwrap();
    for f in [
        &built.bzimage,
        &built.vmlinux,
        &built.initramfs,
        &built.rootfs,
    ] {
        assert!(f.is_file(), "{} exists", f.display());
    }
    let elf = std::fs::read(&built.vmlinux).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF", "vmlinux is the ELF kernel");
    let initrd = std::fs::read(&built.initramfs).unwrap();
    assert_eq!(&initrd[..2], [0x1f, 0x8b], "gzip'd initramfs");

    // Another process building `minimal` (from other inputs) holds its build lock; a
    // cached build is still returned at once, without waiting or rebuilding.
    let lock_file = std::fs::File::create(cached_data_dir().join("images/.minimal.lock")).unwrap();
    let held = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive);
    let again = store
        .build("minimal", &|m| {
            panic!("a cached image must not rebuild or wait: {m}")
        })
        .unwrap();
    drop(held);
    assert_eq!(again, built);
    // The cache may hold builds from other inputs (other agent builds); ours is listed.
    let ours: Vec<_> = store
        .list()
        .into_iter()
        .filter(|i| built.rootfs.starts_with(&i.dir))
        .collect();
    assert_eq!(ours.len(), 1, "the build is listed once");
    assert_eq!(ours[0].name, "minimal");
    assert!(ours[0].kernel_version.contains("cloud-amd64") || ours[0].kernel_version == "custom");
    assert!(store.build("nonsense", &|_| {}).is_err());
}
