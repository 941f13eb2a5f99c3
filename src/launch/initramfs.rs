//! The per-run initramfs: a cpio (newc) archive holding guest-init as /init
//! and the few nodes the kernel needs before init runs.

/// One archive member.
enum Member<'a> {
    Dir(&'a str),
    CharDev(&'a str, u32, u32),
    File(&'a str, &'a [u8]),
}

/// Builds the archive around the guest-init binary.
pub fn build(init: &[u8]) -> Vec<u8> {
    let members = [
        Member::Dir("dev"),
        Member::CharDev("dev/console", 5, 1),
        Member::Dir("proc"),
        Member::Dir("sys"),
        Member::Dir("tmp"),
        Member::Dir("mnt"),
        Member::File("init", init),
    ];
    let mut out = Vec::with_capacity(init.len() + 4096);
    for (ino, m) in members.iter().enumerate() {
        let (name, mode, data, rdev) = match m {
            Member::Dir(n) => (*n, 0o040_755, &[][..], (0, 0)),
            Member::CharDev(n, maj, min) => (*n, 0o020_600, &[][..], (*maj, *min)),
            Member::File(n, d) => (*n, 0o100_755, *d, (0, 0)),
        };
        let nlink = if mode & 0o040_000 != 0 { 2 } else { 1 };
        header(
            &mut out,
            ino as u32 + 1,
            mode,
            nlink,
            name,
            data.len(),
            rdev,
        );
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    header(&mut out, 0, 0, 1, "TRAILER!!!", 0, (0, 0));
    out
}

fn header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    size: usize,
    rdev: (u32, u32),
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime: fixed, so the archive is reproducible
        size as u32,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_lists_init_and_console() {
        let archive = build(b"\x7fELF fake init");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("init.cpio");
        std::fs::write(&path, &archive).expect("write");
        let Ok(out) = std::process::Command::new("cpio")
            .args(["-itv", "-F"])
            .arg(&path)
            .output()
        else {
            eprintln!("cpio not installed; checking the layout by hand");
            assert!(archive.starts_with(b"070701"));
            return;
        };
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            listing.contains("crw-------") && listing.contains("dev/console"),
            "{listing}"
        );
        assert!(
            listing.contains("-rwxr-xr-x") && listing.contains("init"),
            "{listing}"
        );
        assert!(archive.len().is_multiple_of(4));
        // Reproducible: no time, owner or inode of this host in it.
        assert_eq!(build(b"\x7fELF fake init"), archive);
        for line in listing.lines() {
            assert!(
                line.contains(" 0        0 ") || line.contains(" root     root "),
                "{line}"
            );
            assert!(line.contains("1970"), "{line}");
        }
    }
}
