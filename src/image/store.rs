//! The project's image store under `.cella/`: one directory per image id,
//! built in `.cella/tmp/` and renamed into `.cella/images/` whole, so an
//! interrupted build never leaves anything a later run takes for an image.
//!
//! ```text
//! .cella/images/<id>/rootfs.erofs   the image
//! .cella/images/<id>/tree.json      its file tree, for images built on it
//! .cella/images/<id>/image.json     ImageInfo
//! .cella/images/<name>.latest       the id of the last image built for <name>
//! .cella/locks/<id>.lock            flock held while <id> is built
//! .cella/tmp/<id>.<pid>/            a build in progress
//! .cella/volumes/<name>/            a persistent volume
//! ```
//!
//! `.cella/` may come with the checkout, planted by whoever wrote it: cella
//! makes it 0700, refuses it (and anything it uses inside it) when it is a
//! symlink or belongs to another user, and reaches everything in it through
//! [`crate::hostfs::Dir`], so no link there leads a read, a write or a
//! removal elsewhere on the host.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::host::write_replace;
use crate::hostfs::{Dir, FsError, Kind};

pub const ROOTFS: &str = "rootfs.erofs";
pub const TREE: &str = "tree.json";
pub const INFO: &str = "image.json";
const LATEST: &str = ".latest";
/// The state directory's name, beside cella.yaml.
pub const STATE_DIR: &str = ".cella";
/// The largest .latest file read (cella writes 64 bytes).
const SMALL_FILE: u64 = 64 << 10;
/// The largest image.json read: a few hundred bytes, plus the package
/// list of a Debian image (about 40 bytes a package).
const MAX_INFO: u64 = 4 << 20;
/// The largest tree.json read: a full Debian image's is tens of MiB,
/// one at `limits.inodes` (1Mi) about 150 MiB.
pub const MAX_TREE_JSON: u64 = 256 << 20;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StoreError(#[from] pub FsError);

/// What `image.json` says about a finished image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The container it was built for (an identical setup elsewhere shares it).
    pub container: String,
    pub id: String,
    /// sha256 of rootfs.erofs.
    pub digest: String,
    pub size: u64,
    /// What ran its program steps (none: it had none, or an older cella built it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_with: Option<BuiltWith>,
    /// The Debian packages installed in it, `name=version` (dpkg-query's
    /// `${binary:Package}=${Version}`), sorted; empty without a dpkg status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// The OCI image config its `!Image` base came with (inherited through
    /// `!Container`): the container's defaults for what a command leaves out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ImageConfig>,
}

/// What cella keeps of an OCI image's config (`config` in the image
/// config JSON): the defaults of a run in the image, as `podman run` takes
/// them. Values are as the image gave them; `user` is resolved against the
/// image's /etc/passwd and /etc/group when the image is built.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ImageConfig {
    /// `NAME=VALUE`, in the image's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Absolute, or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `User` as the image wrote it (`name`, `uid`, `uid:gid`, `name:group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `user` resolved to numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// The programs a build VM ran on: what `cella.lock` records beside an
/// image whose setup ran programs, since their output may depend on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BuiltWith {
    /// cella's version.
    pub cella: String,
    /// sha256 of the guest kernel (cella-vmlinux).
    pub kernel: String,
    /// sha256 of guest-init.
    pub guest_init: String,
}

/// The store of one project: its `.cella/` directory, held open.
#[derive(Debug)]
pub struct Store {
    root: Dir,
}

/// A finished image in the store.
#[derive(Debug)]
pub struct Image {
    pub dir: Dir,
    pub info: ImageInfo,
}

impl Image {
    /// The image file, opened read-only.
    pub fn open_rootfs(&self) -> Result<File, FsError> {
        self.dir.open_file(Path::new(ROOTFS))
    }

    /// The sha256 of the image file as it is now (hex), which image.json
    /// only claims: `.cella/` may come with the checkout, or have been
    /// edited since the build.
    pub fn current_digest(&self) -> Result<String, FsError> {
        let rel = Path::new(ROOTFS);
        let io = |source| FsError::Io {
            what: "read",
            path: self.dir.display(rel),
            source,
        };
        match super::host::stable_digest(self.open_rootfs()?).map_err(io)? {
            Some(digest) => Ok(hex::encode(digest)),
            None => Err(io(io::Error::other("it changed while it was read"))),
        }
    }

    /// The image's tree.json, read whole (bounded).
    pub fn read_tree(&self) -> Result<Vec<u8>, FsError> {
        self.dir.read(Path::new(TREE), MAX_TREE_JSON)
    }
}

/// An exclusive flock on an image id (or a volume), released on drop.
pub struct BuildLock {
    _file: File,
}

/// A scratch store (see [`Store::scratch`]), removed on drop.
pub struct Scratch {
    pub store: Store,
    parent: Dir,
    name: String,
    _lock: BuildLock,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.parent.remove_tree(Path::new(&self.name));
    }
}

/// A build in progress: its directory in `.cella/tmp/`, held open, and the
/// path of it for host programs that need one (inside `.cella/`, which is
/// the user's, 0700, and out of every guest's reach).
pub struct BuildDir {
    pub dir: Dir,
    pub path: PathBuf,
    name: String,
}

fn flock(file: &File, nonblocking: bool) -> io::Result<bool> {
    let op = if nonblocking {
        rustix::fs::FlockOperation::NonBlockingLockExclusive
    } else {
        rustix::fs::FlockOperation::LockExclusive
    };
    loop {
        match rustix::fs::flock(file, op) {
            Ok(()) => return Ok(true),
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::WOULDBLOCK) if nonblocking => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
}

impl Store {
    /// The store of the project whose directory is `project`: its
    /// `.cella/`, made (0700) if missing, refused if it is a symlink or
    /// another user's, and made private (0700) if it was not.
    pub fn open(project: &Dir) -> Result<Store, StoreError> {
        let rel = Path::new(STATE_DIR);
        project.mkdir(rel, 0o700)?;
        match project.lstat(rel)? {
            Some(meta) if meta.kind == Kind::Symlink => {
                return Err(FsError::Symlink(project.display(rel)).into())
            }
            Some(meta) if meta.kind != Kind::Dir => {
                return Err(FsError::WrongType {
                    path: project.display(rel),
                    expected: "directory (cella keeps its images there)",
                }
                .into())
            }
            _ => {}
        }
        let root = project.open_dir(rel)?;
        root.make_private()?;
        Ok(Store { root })
    }

    /// The `.cella/` directory itself.
    pub fn root(&self) -> &Dir {
        &self.root
    }

    /// A subdirectory of `.cella/`, made if missing, checked to be the user's.
    pub fn subdir(&self, name: &str) -> Result<Dir, StoreError> {
        self.root.mkdir(Path::new(name), 0o700)?;
        let dir = self.root.open_dir(Path::new(name))?;
        dir.check_owner()?;
        Ok(dir)
    }

    /// The finished image `id`, if there is one.
    pub fn get(&self, id: &str) -> Option<Image> {
        if !is_id(id) {
            return None;
        }
        let images = self.root.open_dir(Path::new("images")).ok()?;
        let dir = images.open_dir(Path::new(id)).ok()?;
        // Another user's planting is not an image of ours: rebuilt over.
        dir.check_owner().ok()?;
        let json = dir.read(Path::new(INFO), MAX_INFO).ok()?;
        let info: ImageInfo = serde_json::from_slice(&json).ok()?;
        let rootfs = dir.lstat(Path::new(ROOTFS)).ok()??;
        (info.id == id && rootfs.kind == Kind::File).then_some(Image { dir, info })
    }

    /// The image last built for container `name`, whatever its setup now says.
    pub fn latest(&self, name: &str) -> Option<Image> {
        let images = self.root.open_dir(Path::new("images")).ok()?;
        let id = images.read(&latest_name(name), SMALL_FILE).ok()?;
        self.get(std::str::from_utf8(&id).ok()?.trim())
    }

    /// Waits for the lock of `name` (an image id, or `volume-NAME`).
    pub fn lock(&self, name: &str) -> Result<BuildLock, StoreError> {
        let locks = self.subdir("locks")?;
        let rel = lock_name(name);
        let file = locks.open_with(
            &rel,
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CREATE,
            0o600,
        )?;
        flock(&file, false).map_err(|source| FsError::Io {
            what: "lock",
            path: locks.display(&rel),
            source,
        })?;
        Ok(BuildLock { _file: file })
    }

    /// A store of its own in `.cella/verify/<pid>/`, empty, for rebuilds
    /// from scratch (`_verify`); it is removed when dropped, and those of
    /// verifies that no longer run (whose lock is free) are removed here.
    pub fn scratch(&self) -> Result<Scratch, StoreError> {
        let parent = self.subdir("verify")?;
        let locks = self.subdir("locks")?;
        for name in parent.names()? {
            let name = name.to_string_lossy().into_owned();
            let lock = locks.open_with(
                &lock_name(&format!("verify-{name}")),
                rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CREATE,
                0o600,
            )?;
            if flock(&lock, true).unwrap_or(false) {
                parent.remove_tree(Path::new(&name))?;
                let _ = locks.remove_file(&lock_name(&format!("verify-{name}")));
            }
        }
        let name = std::process::id().to_string();
        let lock = self.lock(&format!("verify-{name}"))?;
        parent.remove_tree(Path::new(&name))?;
        parent.mkdir(Path::new(&name), 0o700)?;
        let root = parent.open_dir(Path::new(&name))?;
        Ok(Scratch {
            store: Store { root },
            parent,
            name,
            _lock: lock,
        })
    }

    /// A fresh directory to build `id` in. Under the lock of `id`; the
    /// leftovers of every build that is not running (killed, even by
    /// SIGKILL) are removed first.
    pub fn start(&self, id: &str, _lock: &BuildLock) -> Result<BuildDir, StoreError> {
        let tmp = self.subdir("tmp")?;
        self.clean_tmp(&tmp, Some(id))?;
        let name = format!("{id}.{}", std::process::id());
        tmp.remove_tree(Path::new(&name))?;
        tmp.mkdir(Path::new(&name), 0o700)?;
        let dir = tmp.open_dir(Path::new(&name))?;
        let path = dir.path().to_path_buf();
        Ok(BuildDir { dir, path, name })
    }

    /// Moves a finished build into place (replacing an older image of the
    /// same id, for `_build --force`) and records it as `name`'s latest.
    pub fn commit(&self, build: BuildDir, info: &ImageInfo) -> Result<Image, StoreError> {
        let json = serde_json::to_vec_pretty(info).map_err(|e| FsError::Io {
            what: "write",
            path: build.dir.display(Path::new(INFO)),
            source: io::Error::other(e),
        })?;
        write_replace(&build.dir, Path::new(INFO), &json)?;
        for name in [ROOTFS, TREE, INFO] {
            let path = Path::new(name);
            build
                .dir
                .open_file(path)?
                .sync_all()
                .map_err(|source| FsError::Io {
                    what: "sync",
                    path: build.dir.display(path),
                    source,
                })?;
        }
        build.dir.sync()?;
        let images = self.subdir("images")?;
        let tmp = self.subdir("tmp")?;
        if images.lstat(Path::new(&info.id))?.is_some() {
            let old = format!("{}.old", build.name);
            images.rename(Path::new(&info.id), &tmp, Path::new(&old))?;
            let _ = tmp.remove_tree(Path::new(&old));
        }
        tmp.rename(Path::new(&build.name), &images, Path::new(&info.id))?;
        self.set_latest(&info.container, &info.id)?;
        images.sync()?;
        let dir = images.open_dir(Path::new(&info.id))?;
        Ok(Image {
            dir,
            info: info.clone(),
        })
    }

    /// Removes a build that failed; best effort (the next build removes
    /// what is left).
    pub fn discard(&self, build: BuildDir) {
        if let Ok(tmp) = self.subdir("tmp") {
            let _ = tmp.remove_tree(Path::new(&build.name));
        }
    }

    /// Records `id` as `name`'s latest if it is not already; best effort,
    /// since a run on an existing image must not fail for it.
    pub fn note_latest(&self, name: &str, id: &str) {
        let current = self
            .root
            .open_dir(Path::new("images"))
            .and_then(|images| images.read(&latest_name(name), SMALL_FILE));
        if current.ok().as_deref() != Some(id.as_bytes()) {
            let _ = self.set_latest(name, id);
        }
    }

    fn set_latest(&self, name: &str, id: &str) -> Result<(), StoreError> {
        let images = self.subdir("images")?;
        let rel = latest_name(name);
        // An older cella's symlink, or one a checkout planted: replaced, never followed.
        if images.lstat(&rel)?.is_some_and(|m| m.kind != Kind::File) {
            images.remove_tree(&rel)?;
        }
        Ok(write_replace(&images, &rel, id.as_bytes())?)
    }

    /// Removes every image whose id is not in `keep` (all of them when
    /// `keep` is None), the latest records that name none after that, and
    /// the leftovers of builds no one is running. Returns the removed ids.
    pub fn clean(&self, keep: Option<&[String]>) -> Result<Vec<String>, StoreError> {
        let mut removed = Vec::new();
        let images = match self.root.lstat(Path::new("images"))? {
            None => None,
            Some(_) => Some(self.subdir("images")?),
        };
        if let Some(images) = &images {
            let mut names: Vec<String> = images
                .names()?
                .into_iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            names.sort();
            for name in &names {
                if !is_id(name) || keep.is_some_and(|k| k.contains(name)) {
                    continue;
                }
                let lock = self.lock(name)?;
                images.remove_tree(Path::new(name))?;
                drop(lock);
                removed.push(name.clone());
            }
            for name in &names {
                let rel = Path::new(name);
                if !name.ends_with(LATEST) {
                    continue;
                }
                let target = images
                    .read(rel, SMALL_FILE)
                    .ok()
                    .and_then(|id| String::from_utf8(id).ok());
                let dangling = target.is_none_or(|id| self.get(id.trim()).is_none());
                if dangling {
                    images.remove_tree(rel)?;
                }
            }
        }
        let tmp = self.subdir("tmp")?;
        self.clean_tmp(&tmp, None)?;
        removed.sort();
        Ok(removed)
    }

    /// Removes what builds and writers left in `.cella/tmp/` that no
    /// running cella uses: a build directory whose id's lock is free, and
    /// any other leftover. The build directories of `holding` (whose lock
    /// the caller holds) are removed too, except this process's own.
    fn clean_tmp(&self, tmp: &Dir, holding: Option<&str>) -> Result<(), StoreError> {
        let own = format!(".{}", std::process::id());
        let locks = self.subdir("locks")?;
        for name in tmp.names()? {
            let name = name.to_string_lossy().into_owned();
            let id = name.split('.').next().unwrap_or_default();
            if !is_id(id) {
                let _ = tmp.remove_tree(Path::new(&name));
                continue;
            }
            if holding == Some(id) {
                if !name.ends_with(&own) {
                    let _ = tmp.remove_tree(Path::new(&name));
                }
                continue;
            }
            let Ok(file) = locks.open_with(&lock_name(id), rustix::fs::OFlags::WRONLY, 0) else {
                let _ = tmp.remove_tree(Path::new(&name));
                continue;
            };
            if flock(&file, true).unwrap_or(false) {
                let _ = tmp.remove_tree(Path::new(&name));
            }
        }
        Ok(())
    }
}

/// An image id: 64 lowercase hex digits.
fn is_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The lock file of an image id (or `volume-NAME`) in `.cella/locks/`.
fn lock_name(name: &str) -> PathBuf {
    PathBuf::from(format!("{}.lock", file_name(name)))
}

fn latest_name(name: &str) -> PathBuf {
    PathBuf::from(format!("{}{LATEST}", file_name(name)))
}

/// A container name as a file name: kept when plain, else hex-encoded.
fn file_name(name: &str) -> String {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if plain {
        name.to_owned()
    } else {
        format!("x-{}", hex::encode(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn info(id: &str) -> ImageInfo {
        ImageInfo {
            container: "base".into(),
            id: id.into(),
            digest: "d".into(),
            size: 1,
            built_with: None,
            packages: Vec::new(),
            config: None,
        }
    }

    fn build(store: &Store, id: &str) -> Image {
        let lock = store.lock(id).unwrap();
        let dir = store.start(id, &lock).unwrap();
        for f in [ROOTFS, TREE] {
            fs::write(dir.path.join(f), id).unwrap();
        }
        store.commit(dir, &info(id)).unwrap()
    }

    fn project() -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        (tmp, dir)
    }

    #[test]
    fn scratch_stores_are_private_and_go_with_their_verify() {
        let (tmp, project) = project();
        let store = Store::open(&project).unwrap();
        // One a killed verify left (its lock is free), and a planted link.
        fs::create_dir_all(tmp.path().join(".cella/verify/999999999/images")).unwrap();
        symlink("/etc", tmp.path().join(".cella/verify/x")).unwrap();
        let scratch = store.scratch().unwrap();
        let own = tmp
            .path()
            .join(format!(".cella/verify/{}", std::process::id()));
        assert!(own.is_dir());
        assert!(!tmp.path().join(".cella/verify/999999999").exists());
        assert!(fs::symlink_metadata(tmp.path().join(".cella/verify/x")).is_err());
        assert!(Path::new("/etc/passwd").exists());
        let id = "c".repeat(64);
        let image = build(&scratch.store, &id);
        assert_eq!(image.current_digest().unwrap(), hex::encode(sha2_of(&id)));
        assert!(
            store.get(&id).is_none(),
            "the project's store has no image of it"
        );
        drop(scratch);
        assert!(!own.exists());
    }

    fn sha2_of(text: &str) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(text.as_bytes()).into()
    }

    #[test]
    fn commit_get_latest_and_clean() {
        let (tmp, project) = project();
        let store = Store::open(&project).unwrap();
        let mode = fs::metadata(tmp.path().join(".cella"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        assert!(store.get(&a).is_none());
        build(&store, &a);
        assert_eq!(store.get(&a).unwrap().info.id, a);
        assert_eq!(store.latest("base").unwrap().info.id, a);
        build(&store, &b);
        assert_eq!(store.latest("base").unwrap().info.id, b);
        // A second container whose setup gives the same id uses the image.
        assert!(store.latest("twin").is_none());
        store.note_latest("twin", &a);
        assert_eq!(store.latest("twin").unwrap().info.id, a);
        // A half-done build is never an image, and clean removes it.
        let lock = store.lock(&a).unwrap();
        let leftover = store.start(&a, &lock).unwrap().path;
        drop(lock);
        assert!(store.get(&a).is_some());
        assert_eq!(
            store.clean(Some(std::slice::from_ref(&b))).unwrap(),
            vec![a.clone()]
        );
        assert!(!leftover.exists());
        assert!(store.get(&a).is_none() && store.get(&b).is_some());
        assert!(!tmp.path().join(".cella/images/twin.latest").exists());
        assert_eq!(store.clean(None).unwrap(), vec![b]);
        assert!(store.latest("base").is_none());
        assert!(!tmp.path().join(".cella/images/base.latest").exists());
    }

    #[test]
    fn a_killed_build_of_another_id_is_cleaned_by_the_next_build() {
        let (tmp, project) = project();
        let store = Store::open(&project).unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        // As if a build of `a` was SIGKILLed: its directory, no lock held.
        let lock = store.lock(&a).unwrap();
        let killed = store.start(&a, &lock).unwrap().path;
        fs::write(killed.join("work.erofs"), b"half").unwrap();
        drop(lock);
        fs::write(tmp.path().join(".cella/tmp/.digests.json.99.tmp"), b"x").unwrap();
        // A build of `a` still running elsewhere is left alone.
        let running = store.lock(&b).unwrap();
        let busy = store.start(&b, &running).unwrap().path;
        let other = Store::open(&project).unwrap();
        let c = "c".repeat(64);
        let lock = other.lock(&c).unwrap();
        other.start(&c, &lock).unwrap();
        assert!(!killed.exists(), "a dead build's leftovers are removed");
        assert!(busy.exists(), "a running build's directory stays");
        assert!(!tmp.path().join(".cella/tmp/.digests.json.99.tmp").exists());
    }

    #[test]
    fn a_planted_cella_directory_is_refused_or_contained() {
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(outside.path().join("images")).unwrap();
        fs::write(outside.path().join("keep"), b"k").unwrap();
        // .cella itself a link: refused, nothing written where it points.
        let (tmp, project) = project();
        symlink(outside.path(), tmp.path().join(".cella")).unwrap();
        let e = Store::open(&project).unwrap_err();
        assert!(e.0.to_string().contains("symbolic link"), "{}", e.0);
        // Links inside: never followed, replaced or refused.
        let (tmp, project) = project_with_cella();
        let c = tmp.path().join(".cella");
        symlink(outside.path(), c.join("tmp")).unwrap();
        fs::create_dir(c.join("images")).unwrap();
        symlink(outside.path().join("keep"), c.join("images/base.latest")).unwrap();
        let id = "d".repeat(64);
        symlink(outside.path(), c.join("images").join(&id)).unwrap();
        let store = Store::open(&project).unwrap();
        assert!(store.latest("base").is_none());
        assert!(store.get(&id).is_none());
        let lock = store.lock(&id).unwrap();
        let e = store.start(&id, &lock).err().unwrap();
        assert!(e.0.to_string().contains("symbolic link"), "{}", e.0);
        drop(lock);
        let e = store.clean(None).unwrap_err();
        assert!(
            e.0.to_string().contains("symbolic link"),
            "tmp is a link: {}",
            e.0
        );
        assert!(
            fs::symlink_metadata(c.join("images").join(&id)).is_err(),
            "the image link itself is removed"
        );
        fs::remove_file(c.join("tmp")).unwrap();
        assert_eq!(store.clean(None).unwrap(), Vec::<String>::new());
        assert!(outside.path().join("keep").exists() && outside.path().join("images").exists());
        store.note_latest("base", &id);
        assert!(fs::symlink_metadata(c.join("images/base.latest"))
            .unwrap()
            .is_file());
        assert_eq!(fs::read(outside.path().join("keep")).unwrap(), b"k");
    }

    fn project_with_cella() -> (tempfile::TempDir, Dir) {
        let (tmp, dir) = project();
        fs::create_dir(tmp.path().join(".cella")).unwrap();
        fs::set_permissions(tmp.path().join(".cella"), fs::Permissions::from_mode(0o777)).unwrap();
        (tmp, dir)
    }

    #[test]
    fn odd_names_become_safe_file_names() {
        assert_eq!(file_name("base-1.2_x"), "base-1.2_x");
        assert_eq!(file_name("a/b"), "x-612f62");
        assert_eq!(file_name(".."), "x-2e2e");
    }
}
