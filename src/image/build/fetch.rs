//! The build steps that bring files in from outside the project's tree:
//! `!Tar` (a project file or a downloaded URL), `!Download`, `!Git`,
//! `!Debian` and `!Image`, each streamed straight into the image being built.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use super::{writer, Builder, HashingReader, StepFailure};
use crate::config::netpolicy::AddressGuard;
use crate::config::{DebianStep, GitStep, ImageStep};
use crate::image::debian;
use crate::image::download::Downloaded;
use crate::image::git;
use crate::image::oci;
use crate::image::progress::{Progress, ProgressReader};
use crate::image::tar_import;
use crate::image::tree::{Inode, Kind};

impl Builder<'_, '_, '_> {
    /// `!Tar`: the project file `rel`, or `url` (downloaded once).
    pub(super) fn tar_step(
        &mut self,
        url: &str,
        rel: Option<&Path>,
        path: &str,
        sha256: Option<&str>,
        subdir: Option<&str>,
    ) -> Result<(), StepFailure> {
        let (file, shown) = match rel {
            Some(rel) => {
                let project = self.ctx.versions.project();
                (project.open_file(rel)?, project.display(rel))
            }
            None => (self.fetch(url, sha256)?.file, PathBuf::from(url)),
        };
        self.tar(file, &shown, path, sha256, subdir)
    }

    /// `url`'s file, from the user's download cache or downloaded into it.
    fn fetch(&self, url: &str, sha256: Option<&str>) -> Result<Downloaded, StepFailure> {
        self.ctx
            .versions
            .fetch_ctx()
            .fetcher()
            .fetch(url, sha256)
            .map_err(|e| StepFailure::Other(e.into()))
    }

    /// `!Git`: the commit's tree at `step.path`, fetched and archived by
    /// the host's git (walled) in a scratch directory of the build's.
    pub(super) fn git(&mut self, step: &GitStep, index: usize) -> Result<(), StepFailure> {
        let scratch = self.build.path.join(format!("git-{index}"));
        let guard = AddressGuard::new(self.ctx.allow_addresses);
        let other = |e: git::GitError| StepFailure::Other(e.into());
        let fetched = git::fetch(step, &scratch, &guard, self.limits.image).map_err(other)?;
        let result = self.git_archive(&fetched, step);
        fetched.remove();
        result
    }

    fn git_archive(&mut self, fetched: &git::Fetched, step: &GitStep) -> Result<(), StepFailure> {
        let other = |e: git::GitError| StepFailure::Other(e.into());
        let shown = PathBuf::from(format!("{}@{}", step.url, fetched.commit));
        let mut writer = writer(&self.work, &self.limits)?;
        let mut running = fetched.archive().map_err(other)?;
        let imported = match running.child.stdout.take() {
            Some(stdout) => tar_import::import_subdir(
                &shown,
                BufReader::with_capacity(64 * 1024, stdout),
                &mut self.tree,
                step.path.as_bytes(),
                None,
                &mut writer,
            )
            .map_err(StepFailure::Tar)
            // The rest (git's trailing zeros) read, so that git ends.
            .and_then(|mut rest| {
                io::copy(&mut rest, &mut io::sink())
                    .map(drop)
                    .map_err(|e| StepFailure::io("read", &shown, e))
            }),
            None => Ok(()),
        };
        if imported.is_err() {
            running.kill();
        }
        let status = fetched.finish(running).map_err(other);
        imported.and(status)
    }

    /// `!Debian`: mmdebstrap's tarball, imported as `!Tar` would.
    pub(super) fn debian(&mut self, step: &DebianStep) -> Result<(), StepFailure> {
        let rel = Path::new("debian.tar");
        let tarball = self.build.path.join(rel);
        let guard = AddressGuard::new(self.ctx.allow_addresses);
        debian::bootstrap(
            step,
            self.epoch,
            &tarball,
            &guard,
            self.ctx.cache_dir.as_deref(),
        )
        .map_err(|e| StepFailure::Other(e.into()))?;
        let result = self
            .build
            .dir
            .open_file(rel)
            .map_err(StepFailure::from)
            .and_then(|file| self.tar(file, &tarball, "/", None, None));
        let _ = self.build.dir.remove_file(rel);
        result
    }

    /// `!Download`: `url`'s file (downloaded once) at `path`, root's,
    /// with `mode`.
    pub(super) fn download(
        &mut self,
        url: &str,
        path: &str,
        mode: u32,
        sha256: Option<&str>,
    ) -> Result<(), StepFailure> {
        let fetched = self.fetch(url, sha256)?;
        let (meta, parents) = (
            self.meta((mode & 0o7777) as u16, 0, 0),
            self.meta(0o755, 0, 0),
        );
        let mut writer = writer(&self.work, &self.limits)?;
        let mut reader = BufReader::with_capacity(256 * 1024, fetched.file);
        let data = writer
            .write_file_data(&mut reader)
            .map_err(StepFailure::Image)?;
        let inode = Inode {
            meta,
            kind: Kind::File(data),
        };
        self.tree.insert(path.as_bytes(), inode, &parents)?;
        Ok(())
    }

    /// Imports the tarball `file` (shown as `tarball` in messages) at `dest`.
    pub(super) fn tar(
        &mut self,
        file: File,
        tarball: &Path,
        dest: &str,
        sha256: Option<&str>,
        subdir: Option<&str>,
    ) -> Result<(), StepFailure> {
        let total = file.metadata().map(|m| m.len()).unwrap_or(0);
        let progress = Progress::new("importing", total);
        let reader = ProgressReader::new(
            HashingReader::new(BufReader::with_capacity(256 * 1024, file)),
            &progress,
        );
        let mut writer = writer(&self.work, &self.limits)?;
        // Compressed or not, told by its first bytes; hashed as it is.
        let rest = tar_import::import_subdir(
            tarball,
            BufReader::with_capacity(64 * 1024, reader),
            &mut self.tree,
            dest.as_bytes(),
            subdir.map(str::as_bytes),
            &mut writer,
        )
        .map_err(StepFailure::Tar)?;
        // What follows the archive is hashed too, not decompressed.
        let mut rest = rest.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(|e| StepFailure::io("read", tarball, e))?;
        progress.finish();
        if let Some(expected) = sha256 {
            let actual = rest.into_inner().finish();
            if actual != expected {
                return Err(StepFailure::Checksum {
                    path: tarball.to_path_buf(),
                    expected: expected.to_owned(),
                    actual,
                });
            }
        }
        Ok(())
    }

    /// `!Image`: the image's layers over an empty tree, its config kept.
    pub(super) fn image(&mut self, step: &ImageStep) -> Result<(), StepFailure> {
        let source = self.ctx.versions.image_source(step);
        let mut writer = writer(&self.work, &self.limits)?;
        let oci_err = |e: oci::OciError| StepFailure::Other(e.into());
        let mut config =
            oci::import(&source, step, &mut self.tree, &mut writer).map_err(oci_err)?;
        drop(writer);
        oci::resolve_user(&mut config, &self.tree, &self.work).map_err(oci_err)?;
        self.config = Some(config);
        Ok(())
    }
}
