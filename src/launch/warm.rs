//! Warm snapshots: a VM saved after guest-init has mounted a run's image
//! as its root and read the run's program into the page cache (see
//! guest-init's warm.rs), so that later runs of that program in that image
//! start from there instead of from the plain snapshot, where nothing is
//! mounted yet. Nothing of a run is in one: the snapshot is taken before
//! the run spec (clock, entropy, shares, environment) goes out.
//!
//! A run asked for again goes further (guest-init's forked.rs): the
//! snapshot holds that run ready, its mounts made and its program stopped
//! before its first instruction. That one does hold the run's argv and
//! environment (from cella.yaml and the command line; a run given values
//! from the host's environment is never held ready), and is keyed by the
//! project's shares too. Its guest must not have looked beneath a share
//! while readying it: the host's FUSE server tells ([`mark_unfit`]).
//!
//! Each is a file in snapshot.rs's format at `<cache>/warm/<image>-<key>.snap`:
//! the image's id in the name, so `_clean` can drop those of images it
//! removes; the key hashes the plain snapshot's key (the VM's shape, the
//! kernel, guest-init, cella, the CPU), the image's content digest, the
//! root's device and the program with its PATH. So projects with the same
//! image share them. The digest a project's store records is the
//! project's word, and a project may ship a forged `.cella/`: a warm
//! snapshot is only used with an image file whose bytes were hashed to
//! that digest, once per version of the file (its device, inode, size and
//! change time), remembered under `<cache>/warm/verified/`. Together they
//! take at most `limits.warm-snapshots` of disk: after each save the least
//! recently used go first (a restore marks its file used).

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use guest_init::{search_path, Prepare, RunSpec};
use sha2::{Digest, Sha256};

use super::snapshot::SnapshotError;

const EXTENSION: &str = "snap";
/// The marker of a warm snapshot asked for once ([`asked_before`]).
const SEEN: &str = "seen";
/// The marker of a run that cannot be held ready ([`mark_unfit`]).
const UNFIT: &str = "unfit";

/// Where a run's warm snapshot is, and what the guest readies for it.
pub struct WarmPlan {
    pub dir: PathBuf,
    /// The file name without its extension; also the name of its lock.
    pub name: String,
    pub path: PathBuf,
    pub prepare: Prepare,
}

/// The warm snapshots' directory under the user's cache.
pub fn dir(cache: &Path) -> PathBuf {
    cache.join("warm")
}

/// The warm snapshots a run of `spec` may start from, best first, with
/// `images` (each drive's image id and content digest) in a VM whose
/// plain snapshot has the key `base`: given its `shares`' host identities
/// (device, inode), one holding this very run ready, its program (or
/// each `!Supervise` child) stopped before its first instruction
/// ([`RunSpec::can_fork_ahead`]; keyed by the whole spec but the clock
/// and the entropy, and by the shares: runs restored from one share its
/// address-space layout, which only this project's runs may know), then,
/// for a plain run, one holding its
/// image mounted and its program read (keyed by the program and its
/// PATH). The file is named after the first image. The caller has
/// checked the digests ([`verified`]).
pub fn plans(
    cache: &Path,
    base: &str,
    images: &[(&str, &str)],
    spec: &RunSpec,
    shares: Option<&[(u64, u64)]>,
) -> Vec<WarmPlan> {
    let Some(&image) = images.first() else {
        return Vec::new();
    };
    let program = spec.argv.first().cloned().unwrap_or_default();
    let prepare = Prepare {
        rootfs_device: spec.rootfs_device.clone(),
        program,
        path: search_path(&spec.env).to_owned(),
        run: None,
    };
    let mut plans = Vec::with_capacity(2);
    if let Some(shares) = shares.filter(|_| spec.can_fork_ahead()) {
        let run = spec.fresh();
        // serde_json writes a struct's fields in their declared order.
        let json = serde_json::to_string(&run).unwrap_or_default();
        let shares: Vec<String> = shares.iter().map(|(d, i)| format!("{d}:{i}")).collect();
        let mut fields = vec![base];
        fields.extend(images.iter().map(|(_, digest)| *digest));
        fields.push(&json);
        fields.extend(shares.iter().map(String::as_str));
        let name = key(b"cella-warm-run\0", image, &fields);
        plans.push(plan_at(
            cache,
            name,
            Prepare {
                run: Some(Box::new(run)),
                ..prepare.clone()
            },
        ));
    }
    if spec.supervise.is_some() || images.len() != 1 {
        return plans;
    }
    let fields = [
        base,
        image.1,
        &prepare.rootfs_device,
        &prepare.program,
        &prepare.path,
    ];
    let name = key(b"cella-warm\0", image, &fields);
    plans.push(plan_at(cache, name, prepare));
    plans
}

/// `<image id>-<hash of fields>`.
fn key(domain: &[u8], image: (&str, &str), fields: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(domain);
    for field in fields {
        h.update((field.len() as u64).to_le_bytes());
        h.update(field.as_bytes());
    }
    format!(
        "{}-{}",
        name_safe(image.0),
        hex::encode(&h.finalize()[..16])
    )
}

fn plan_at(cache: &Path, name: String, prepare: Prepare) -> WarmPlan {
    let dir = dir(cache);
    let path = dir.join(format!("{name}.{EXTENSION}"));
    WarmPlan {
        dir,
        name,
        path,
        prepare,
    }
}

/// Whether `disk`'s bytes have the sha256 `claimed` (lowercase hex): read
/// and hashed the first time this version of the file is asked about,
/// then remembered by its identity (device, inode, size, modification and
/// change times, which any write changes).
pub fn verified(cache: &Path, disk: &File, claimed: &str) -> Result<bool, SnapshotError> {
    let io_err = |e| SnapshotError::Identity("the image file".into(), e);
    let meta = disk.metadata().map_err(io_err)?;
    let mut id = Sha256::new();
    id.update(b"cella-verified\0");
    for v in [meta.dev(), meta.ino(), meta.size()] {
        id.update(v.to_le_bytes());
    }
    for v in [
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    ] {
        id.update(v.to_le_bytes());
    }
    let verified_dir = dir(cache).join("verified");
    let marker = verified_dir.join(hex::encode(&id.finalize()[..16]));
    if let Ok(known) = std::fs::read_to_string(&marker) {
        return Ok(known == claimed);
    }
    let copy = disk.try_clone().map_err(io_err)?;
    let Some(digest) = crate::image::host::stable_digest(copy).map_err(io_err)? else {
        // Written to while it was read: not this version's bytes.
        return Ok(false);
    };
    let actual = hex::encode(digest);
    // Remembered either way: a file that does not match stays unmatched.
    let write_err = |e| SnapshotError::Write(marker.clone(), e);
    crate::hostfs::Dir::create_private(&verified_dir)
        .map_err(|e| write_err(std::io::Error::other(e.to_string())))?;
    let tmp = verified_dir.join(format!(".tmp{}", std::process::id()));
    std::fs::write(&tmp, &actual)
        .and_then(|()| std::fs::rename(&tmp, &marker))
        .map_err(write_err)?;
    Ok(actual == claimed)
}

/// An image id as it may appear in a file name: at most 64 of its
/// letters, digits, `.`, `_` and `-`.
fn name_safe(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect::<String>()
        .trim_start_matches('.')
        .to_owned()
}

/// Whether a run has asked for this warm snapshot before; notes that one
/// has. Only the second run of a program in an image makes its warm
/// snapshot: making one costs a run more than restoring it saves, and
/// most programs in a CI job's images run once.
pub fn asked_before(plan: &WarmPlan) -> bool {
    if marker(plan, SEEN).exists() {
        return true;
    }
    let _ = crate::hostfs::Dir::create_private(&plan.dir);
    mark(plan, SEEN);
    false
}

/// Notes that the run of `plan` cannot be held ready (its guest looked
/// beneath a share while readying it): later runs do not try again.
pub fn mark_unfit(plan: &WarmPlan) {
    mark(plan, UNFIT);
}

/// Whether [`mark_unfit`] marked `plan`.
pub fn unfit(plan: &WarmPlan) -> bool {
    marker(plan, UNFIT).exists()
}

/// The marker file of kind `ext` ([`SEEN`], [`UNFIT`]) of `plan`.
fn marker(plan: &WarmPlan, ext: &str) -> PathBuf {
    plan.dir.join(format!("{}.{ext}", plan.name))
}

/// Makes `plan`'s marker of kind `ext`, if it is not there.
fn mark(plan: &WarmPlan, ext: &str) {
    let _ = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(marker(plan, ext));
}

/// Marks a warm snapshot used now, for [`bound`]'s order.
pub fn touch(path: &Path) {
    if let Ok(f) = File::options().write(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// One snapshot in the cache.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: PathBuf,
    /// The image id its name starts with (warm snapshots only).
    pub image: Option<String>,
    /// Bytes of disk it takes (its holes take none).
    pub bytes: u64,
    pub used: SystemTime,
}

/// The snapshot files in `dir` (`warm`: named `<image>-<key>`), least
/// recently used first. Links and other files are left out.
pub fn list(dir: &Path, warm: bool) -> Vec<Entry> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<Entry> = entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path).ok()?;
            if !meta.is_file() || path.extension().is_none_or(|x| x != EXTENSION) {
                return None;
            }
            let stem = path.file_stem()?.to_str()?;
            let image = match warm {
                true => Some(stem.rsplit_once('-')?.0.to_owned()),
                false => None,
            };
            Some(Entry {
                image,
                bytes: meta.blocks() * 512,
                used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                path,
            })
        })
        .collect();
    found.sort_by_key(|e| e.used);
    found
}

/// Removes the least recently used warm snapshots in `dir`, never `keep`,
/// until they take at most `limit` bytes together; what was removed.
pub fn bound(dir: &Path, keep: &Path, limit: u64) -> Vec<Entry> {
    let entries = list(dir, true);
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut removed = Vec::new();
    for e in entries {
        if total <= limit {
            break;
        }
        if e.path == keep {
            continue;
        }
        if std::fs::remove_file(&e.path).is_ok() {
            total = total.saturating_sub(e.bytes);
            removed.push(e);
        }
    }
    removed
}

/// Removes the markers of warm snapshots asked for once ([`asked_before`]).
pub fn remove_markers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == SEEN || x == UNFIT) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Removes the warm snapshots of the images `ids`, with their locks and
/// markers; how many snapshots.
pub fn remove_images(cache: &Path, ids: &[String]) -> usize {
    let ids: Vec<String> = ids.iter().map(|id| name_safe(id)).collect();
    let Ok(entries) = std::fs::read_dir(dir(cache)) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let path = e.path();
        let (Some(stem), Some(ext)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        let ours = stem
            .rsplit_once('-')
            .is_some_and(|(image, _)| ids.iter().any(|id| id == image));
        if ours
            && [EXTENSION, SEEN, UNFIT, "lock"].contains(&ext)
            && std::fs::remove_file(&path).is_ok()
        {
            removed += usize::from(ext == EXTENSION);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv0: &str, path: Option<&str>) -> RunSpec {
        let env = path
            .map(|p| vec![("PATH".to_owned(), p.to_owned())])
            .unwrap_or_default();
        RunSpec::new(vec![argv0.into(), "arg".into()], env)
    }

    #[test]
    fn the_key_changes_with_every_input_and_only_then() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = |base: &str, id: (&str, &str), spec: &RunSpec| {
            let plans = plans(dir.path(), base, &[id], spec, Some(&[(1, 2)]));
            plans.last().expect("a plan").name.clone()
        };
        let one = key("b", ("img1", "d1"), &spec("sh", None));
        assert!(one.starts_with("img1-"), "{one}");
        assert_eq!(one, key("b", ("img1", "d1"), &spec("sh", None)));
        let others = [
            key("c", ("img1", "d1"), &spec("sh", None)),
            key("b", ("img2", "d1"), &spec("sh", None)),
            key("b", ("img1", "d2"), &spec("sh", None)),
            key("b", ("img1", "d1"), &spec("ls", None)),
            key("b", ("img1", "d1"), &spec("sh", Some("/opt/bin"))),
        ];
        for other in others {
            assert_ne!(one, other);
        }
        // Only argv[0] counts: arguments are the run's, not the snapshot's.
        let mut more = spec("sh", None);
        more.argv.push("-x".into());
        assert_eq!(one, key("b", ("img1", "d1"), &more));
    }

    #[test]
    fn a_run_held_ready_is_keyed_by_its_whole_spec_but_what_is_fresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ready = |spec: &RunSpec| {
            let plans = plans(dir.path(), "b", &[("img", "d")], spec, Some(&[(1, 2)]));
            (plans.len() == 2).then(|| plans[0].name.clone())
        };
        let mut one = spec("sh", None);
        one.cwd = "/work".into();
        one.mounts.push(guest_init::Mount::Share {
            target: "/work".into(),
            share: 0,
            read_only: false,
        });
        let name = ready(&one).expect("held ready");
        // Only for the project whose shares it was made with.
        let elsewhere = plans(dir.path(), "b", &[("img", "d")], &one, Some(&[(1, 3)]));
        assert_ne!(elsewhere[0].name, name);
        assert_eq!(plans(dir.path(), "b", &[("img", "d")], &one, None).len(), 1);
        assert_ne!(Some(name.clone()), ready(&spec("sh", None)));
        let mut fresh = one.clone();
        fresh.realtime_ns = 42;
        fresh.entropy = vec![7; 32];
        fresh.stats = true;
        assert_eq!(ready(&fresh), Some(name.clone()));
        for change in [
            |s: &mut RunSpec| s.argv.push("-x".into()),
            |s: &mut RunSpec| s.env.push(("A".into(), "1".into())),
            |s: &mut RunSpec| s.uid = 1000,
            |s: &mut RunSpec| s.hostname = "other".into(),
            |s: &mut RunSpec| s.read_only_root = true,
        ] {
            let mut other = one.clone();
            change(&mut other);
            let got = ready(&other).expect("held ready");
            assert_ne!(got, name);
        }
        // Not held ready: a terminal, a network, or anything looked up
        // beneath a share (the working directory, the program, PATH, or
        // another mount).
        for change in [
            |s: &mut RunSpec| s.tty = Some(guest_init::WinSize { rows: 1, cols: 1 }),
            |s: &mut RunSpec| s.cwd = "/work/sub".into(),
            |s: &mut RunSpec| s.cwd = "/work/../etc".into(),
            |s: &mut RunSpec| s.argv[0] = "/work/run.sh".into(),
            |s: &mut RunSpec| s.argv[0] = "bin/run".into(),
            |s: &mut RunSpec| s.env.push(("PATH".into(), "/work/bin:/bin".into())),
            |s: &mut RunSpec| s.env.push(("PATH".into(), ":/bin".into())),
            |s: &mut RunSpec| {
                s.mounts.push(guest_init::Mount::Empty {
                    target: "/work/node_modules".into(),
                })
            },
        ] {
            let mut other = one.clone();
            change(&mut other);
            assert_eq!(ready(&other), None, "{other:?}");
        }
    }

    #[test]
    fn a_supervised_run_is_held_ready_only_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = |name: &str, cwd: &str| guest_init::ChildSpec {
            name: name.into(),
            argv: vec!["sh".into()],
            env: Vec::new(),
            cwd: cwd.into(),
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            rootfs_device: "/dev/vda".into(),
            mounts: vec![guest_init::Mount::Share {
                target: "/work".into(),
                share: 0,
                read_only: false,
            }],
            read_only_root: false,
        };
        let group = |children| {
            let mut spec = RunSpec::new(Vec::new(), Vec::new());
            spec.supervise = Some(guest_init::Supervise {
                mode: guest_init::SuperviseMode::WaitAll,
                kill_after_ms: 1000,
                prefix: true,
                children,
            });
            spec
        };
        let images = [("img", "d"), ("other", "e")];
        let good = group(vec![child("a", "/work"), child("b", "/")]);
        let plans = plans(dir.path(), "b", &images, &good, Some(&[(1, 2)]));
        assert_eq!(plans.len(), 1, "no image-level snapshot for a group");
        assert!(plans[0].name.starts_with("img-"));
        assert!(plans[0].prepare.run.is_some());
        let one_digest_changed = super::plans(
            dir.path(),
            "b",
            &[("img", "d"), ("other", "f")],
            &good,
            Some(&[(1, 2)]),
        );
        assert_ne!(one_digest_changed[0].name, plans[0].name);
        let bad = group(vec![child("a", "/work"), child("b", "/work/sub")]);
        assert!(super::plans(dir.path(), "b", &images, &bad, Some(&[(1, 2)])).is_empty());
        assert!(super::plans(
            dir.path(),
            "b",
            &images,
            &group(Vec::new()),
            Some(&[(1, 2)])
        )
        .is_empty());
    }

    #[test]
    fn only_a_file_with_the_claimed_digest_is_verified() {
        let cache = tempfile::tempdir().expect("tempdir");
        let image = cache.path().join("rootfs.erofs");
        std::fs::write(&image, b"image").expect("write");
        let real = hex::encode(Sha256::digest(b"image"));
        let check = |claimed: &str| {
            let disk = File::open(&image).expect("open");
            verified(cache.path(), &disk, claimed).expect("verify")
        };
        assert!(check(&real));
        assert!(check(&real), "remembered");
        assert!(!check(&hex::encode(Sha256::digest(b"forged"))));
        // Rewritten in place: hashed again.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&image, b"other").expect("rewrite");
        assert!(!check(&real));
        assert!(check(&hex::encode(Sha256::digest(b"other"))));
    }

    #[test]
    fn names_keep_only_safe_characters() {
        assert_eq!(name_safe("../../etc/x"), "etcx");
        assert_eq!(name_safe("abc-123_x.y"), "abc-123_x.y");
        assert_eq!(name_safe(&"a".repeat(100)).len(), 64);
    }

    #[test]
    fn the_bound_drops_the_least_recently_used_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let mut paths = Vec::new();
        for (i, name) in ["old-1", "mid-2", "new-3", "keep-4"].iter().enumerate() {
            let path = dir.path().join(format!("{name}.snap"));
            std::fs::write(&path, vec![1u8; 64 << 10]).expect("write");
            let f = File::options().write(true).open(&path).expect("open");
            let at = now - std::time::Duration::from_secs(1000 - i as u64 * 10);
            f.set_modified(at).expect("mtime");
            paths.push(path);
        }
        // keep-4 is the newest but is what was just saved either way.
        std::fs::write(dir.path().join("note.txt"), b"not a snapshot").expect("write");
        let each = list(dir.path(), true)[0].bytes;
        let removed = bound(dir.path(), &paths[3], 2 * each);
        let names: Vec<_> = removed.iter().filter_map(|e| e.image.clone()).collect();
        assert_eq!(names, ["old", "mid"]);
        assert!(paths[2].exists() && paths[3].exists());
        assert!(dir.path().join("note.txt").exists());
        assert_eq!(remove_images(dir.path().parent().expect("parent"), &[]), 0);
    }

    #[test]
    fn removing_an_images_snapshots_leaves_the_others() {
        let cache = tempfile::tempdir().expect("tempdir");
        let warm = dir(cache.path());
        std::fs::create_dir(&warm).expect("mkdir");
        for name in [
            "aaa-k1.snap",
            "aaa-k2.snap",
            "bbb-k3.snap",
            "aaa-k4.lock",
            "aaa-k1.seen",
        ] {
            std::fs::write(warm.join(name), b"x").expect("write");
        }
        assert_eq!(remove_images(cache.path(), &["aaa".to_owned()]), 2);
        let mut left: Vec<_> = std::fs::read_dir(&warm)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["bbb-k3.snap"]);
    }
}
