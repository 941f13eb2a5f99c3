//! The project's image store under `.cella/`: one directory per image id,
//! built in `.cella/tmp/` and renamed into `.cella/images/` whole, so an
//! interrupted build never leaves anything a later run takes for an image.
//!
//! ```text
//! .cella/images/<id>/rootfs.erofs   the image
//! .cella/images/<id>/tree.json      its file tree, for images built on it
//! .cella/images/<id>/image.json     ImageInfo
//! .cella/images/<name>.latest       symlink to the last image built for <name>
//! .cella/locks/<id>.lock            flock held while <id> is built
//! .cella/tmp/<id>.<pid>/            a build in progress
//! ```

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const ROOTFS: &str = "rootfs.erofs";
pub const TREE: &str = "tree.json";
pub const INFO: &str = "image.json";
const LATEST: &str = ".latest";

/// A store operation failed on `path`.
#[derive(Debug, thiserror::Error)]
#[error("image store: cannot {what} {}", .path.display())]
pub struct StoreError {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn fail<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> StoreError + 'p {
    move |source| StoreError {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What `image.json` says about a finished image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The container it was built for (an identical setup elsewhere shares it).
    pub container: String,
    pub id: String,
    /// sha256 of rootfs.erofs.
    pub digest: String,
    pub size: u64,
}

/// The store of one project.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A finished image in the store.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub info: ImageInfo,
}

impl Image {
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join(ROOTFS)
    }

    pub fn tree(&self) -> PathBuf {
        self.dir.join(TREE)
    }
}

/// An exclusive flock on an image id, released on drop.
pub struct BuildLock {
    _file: File,
}

impl Store {
    /// The store inside `state_dir` (the project's `.cella`).
    pub fn new(state_dir: &Path) -> Store {
        Store {
            root: state_dir.to_path_buf(),
        }
    }

    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The finished image `id`, if there is one.
    pub fn get(&self, id: &str) -> Option<Image> {
        let dir = self.images_dir().join(id);
        let info: ImageInfo = serde_json::from_slice(&fs::read(dir.join(INFO)).ok()?).ok()?;
        (info.id == id && dir.join(ROOTFS).is_file()).then_some(Image { dir, info })
    }

    /// The image last built for container `name`, whatever its setup now says.
    pub fn latest(&self, name: &str) -> Option<Image> {
        let link = self
            .images_dir()
            .join(format!("{}{LATEST}", file_name(name)));
        let id = fs::read_link(link).ok()?;
        self.get(id.to_str()?)
    }

    /// Waits for the build lock of `id`.
    pub fn lock(&self, id: &str) -> Result<BuildLock, StoreError> {
        let dir = self.root.join("locks");
        fs::create_dir_all(&dir).map_err(fail("create", &dir))?;
        let path = dir.join(format!("{id}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(fail("create", &path))?;
        loop {
            // SAFETY: flock on an fd we own; no memory effects.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(BuildLock { _file: file });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(fail("lock", &path)(e));
            }
        }
    }

    /// A fresh directory to build `id` in. Under the lock of `id`, so the
    /// leftovers of interrupted builds of `id` are removed first.
    pub fn start(&self, id: &str, _lock: &BuildLock) -> Result<PathBuf, StoreError> {
        let tmp = self.tmp_dir();
        fs::create_dir_all(&tmp).map_err(fail("create", &tmp))?;
        if let Ok(entries) = fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name.to_string_lossy().starts_with(&format!("{id}.")) {
                    // Best effort: a leftover is never taken for an image.
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = tmp.join(format!("{id}.{}", std::process::id()));
        fs::create_dir(&dir).map_err(fail("create", &dir))?;
        Ok(dir)
    }

    /// Moves a finished build into place (replacing an older image of the
    /// same id, for `_build --force`) and points `name`'s latest link at it.
    pub fn commit(&self, build_dir: &Path, info: &ImageInfo) -> Result<Image, StoreError> {
        let info_path = build_dir.join(INFO);
        let json =
            serde_json::to_vec_pretty(info).map_err(|e| fail("write", &info_path)(e.into()))?;
        fs::write(&info_path, json).map_err(fail("write", &info_path))?;
        for name in [ROOTFS, TREE, INFO] {
            let path = build_dir.join(name);
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(fail("sync", &path))?;
        }
        sync_dir(build_dir)?;
        let images = self.images_dir();
        fs::create_dir_all(&images).map_err(fail("create", &images))?;
        let dest = images.join(&info.id);
        if dest.exists() {
            let old = build_dir.with_extension("old");
            fs::rename(&dest, &old).map_err(fail("replace", &dest))?;
            let _ = fs::remove_dir_all(&old);
        }
        fs::rename(build_dir, &dest).map_err(fail("store", &dest))?;
        self.set_latest(&info.container, &info.id)?;
        sync_dir(&images)?;
        Ok(Image {
            dir: dest,
            info: info.clone(),
        })
    }

    /// Points `name`'s latest link at `id` if it points elsewhere; best
    /// effort, since a run on an existing image must not fail for it.
    pub fn note_latest(&self, name: &str, id: &str) {
        let link = self
            .images_dir()
            .join(format!("{}{LATEST}", file_name(name)));
        if fs::read_link(&link).ok().as_deref() != Some(Path::new(id)) {
            let _ = self.set_latest(name, id);
        }
    }

    fn set_latest(&self, name: &str, id: &str) -> Result<(), StoreError> {
        let images = self.images_dir();
        let link = images.join(format!("{}{LATEST}", file_name(name)));
        let tmp = images.join(format!(".{}.{}", file_name(name), std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(id, &tmp).map_err(fail("create", &tmp))?;
        fs::rename(&tmp, &link).map_err(fail("create", &link))
    }

    /// Removes every image whose id is not in `keep` (all of them when
    /// `keep` is None), the latest links that dangle after that, and the
    /// leftovers of builds no one is running. Returns the removed ids.
    pub fn clean(&self, keep: Option<&[String]>) -> Result<Vec<String>, StoreError> {
        let images = self.images_dir();
        let mut removed = Vec::new();
        let entries = match fs::read_dir(&images) {
            Ok(entries) => entries.collect::<Result<Vec<_>, _>>(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
        .map_err(fail("list", &images))?;
        for entry in &entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_image = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if !is_image || keep.is_some_and(|k| k.contains(&name)) {
                continue;
            }
            let lock = self.lock(&name)?;
            fs::remove_dir_all(entry.path()).map_err(fail("remove", &entry.path()))?;
            drop(lock);
            removed.push(name);
        }
        for entry in &entries {
            let path = entry.path();
            let dangling = fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink())
                && fs::metadata(&path).is_err();
            if dangling {
                fs::remove_file(&path).map_err(fail("remove", &path))?;
            }
        }
        self.clean_tmp()?;
        removed.sort();
        Ok(removed)
    }

    /// Removes the build directories whose builds are not running.
    fn clean_tmp(&self) -> Result<(), StoreError> {
        let tmp = self.tmp_dir();
        let Ok(entries) = fs::read_dir(&tmp) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name.split('.').next().unwrap_or_default();
            let lock_path = self.root.join("locks").join(format!("{id}.lock"));
            let Ok(file) = File::open(&lock_path) else {
                let _ = fs::remove_dir_all(entry.path());
                continue;
            };
            // SAFETY: flock on an fd we own; no memory effects.
            let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
            if free {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }
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

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail("sync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> ImageInfo {
        ImageInfo {
            container: "base".into(),
            id: id.into(),
            digest: "d".into(),
            size: 1,
        }
    }

    fn build(store: &Store, id: &str) -> Image {
        let lock = store.lock(id).unwrap();
        let dir = store.start(id, &lock).unwrap();
        for f in [ROOTFS, TREE] {
            fs::write(dir.join(f), id).unwrap();
        }
        store.commit(&dir, &info(id)).unwrap()
    }

    #[test]
    fn commit_get_latest_and_clean() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
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
        let leftover = store.start(&a, &lock).unwrap();
        drop(lock);
        assert!(store.get(&a).is_some());
        assert_eq!(
            store.clean(Some(std::slice::from_ref(&b))).unwrap(),
            vec![a.clone()]
        );
        assert!(!leftover.exists());
        assert!(store.get(&a).is_none() && store.get(&b).is_some());
        assert_eq!(store.clean(None).unwrap(), vec![b]);
        assert!(store.latest("base").is_none());
        assert!(!store.images_dir().join("base.latest").exists());
    }

    #[test]
    fn odd_names_become_safe_file_names() {
        assert_eq!(file_name("base-1.2_x"), "base-1.2_x");
        assert_eq!(file_name("a/b"), "x-612f62");
        assert_eq!(file_name(".."), "x-2e2e");
    }
}
