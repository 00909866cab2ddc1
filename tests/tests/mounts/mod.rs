//! Filesystems mounted for one test (the disk and read-only tests): they need root, as CI has,
//! and fail with a clear message when the kernel refuses. Each mount is undone when its guard
//! drops, also when the test panics (a lazy unmount, so a process still holding files there
//! cannot keep it mounted).

#![allow(dead_code)] // each test file uses part of it

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs a command that must succeed; panics with its output otherwise.
pub fn run(prog: &str, args: &[&str]) {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?} failed (these tests mount filesystems and need root, as CI has): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A mounted filesystem, unmounted on drop.
pub struct Mount(PathBuf);

impl Mount {
    /// A tmpfs of `size` (e.g. "2m") at `dir`, created if missing; `ro` mounts it read-only.
    pub fn tmpfs(dir: &Path, size: &str, ro: bool) -> Self {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        let opts = format!("size={size}{}", if ro { ",ro" } else { "" });
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &opts,
                "tmpfs",
                &dir.display().to_string(),
            ],
        );
        Self(dir.to_path_buf())
    }

    /// An ext4 filesystem image of `size_mib` in `image`, mounted through a loop device at
    /// `dir` with `errors=remount-ro`, as Raspberry Pi OS mounts its SD card.
    pub fn ext4(image: &Path, size_mib: u64, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        let f = std::fs::File::create(image).unwrap_or_else(|e| panic!("{e}"));
        f.set_len(size_mib << 20).unwrap_or_else(|e| panic!("{e}"));
        drop(f);
        let img = image.display().to_string();
        run("mkfs.ext4", &["-q", "-F", &img]);
        run(
            "mount",
            &[
                "-o",
                "loop,errors=remount-ro",
                &img,
                &dir.display().to_string(),
            ],
        );
        Self(dir.to_path_buf())
    }

    /// An existing ext4 image mounted again (after `e2fsck`), as [`Mount::ext4`] does.
    pub fn ext4_existing(image: &Path, dir: &Path) -> Self {
        run(
            "mount",
            &[
                "-o",
                "loop,errors=remount-ro",
                &image.display().to_string(),
                &dir.display().to_string(),
            ],
        );
        Self(dir.to_path_buf())
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // A loop device set up by `mount -o loop` is freed with its last unmount.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
