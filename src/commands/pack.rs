//! `cella _pack_image [-f FILE] [-z|-j|-J] [--format F] [--tag REF]
//! CONTAINER`: vagga's export of a container's root as a tarball, or an
//! OCI or docker archive that podman, docker and skopeo load, the
//! container built first if its setup changed.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::build::{container, image_for_run};
use super::builder::fetch_ctx;
use super::error::CommandError;
use super::options::RunOptions;
use super::project::Project;
use crate::config::{Config, Container, RegistryRef};
use crate::image::oci::push;
use crate::image::pack::{self, Compression, PackFormat, PackOptions};
use crate::image::store::{Image, ImageConfig};
use crate::image::version;

/// What `_pack_image` was asked for.
pub struct PackRequest<'a> {
    pub container: &'a str,
    /// Where to write; stdout when none.
    pub file: Option<&'a Path>,
    pub format: PackFormat,
    pub compression: Compression,
    /// The image's name in an archive; `localhost/CONTAINER:latest` when none.
    pub tag: Option<&'a str>,
}

pub fn pack_image(
    config: &Config,
    req: &PackRequest<'_>,
    opts: &RunOptions,
) -> Result<i32, CommandError> {
    let cont = container(config, req.container)?;
    if req.file.is_none() && io::stdout().is_terminal() {
        return Err(CommandError::Usage(
            "refusing to write an archive to a terminal: redirect stdout or give -f FILE".into(),
        ));
    }
    let project = Project::open(config)?;
    let image = image_for_run(config, &project, req.container, opts)?;
    let image_config = archive_config(&image, cont);
    let reference = match req.tag {
        Some(tag) => tag.to_owned(),
        None => format!("localhost/{}:latest", req.container),
    };
    let epoch =
        version::epoch(opts.knobs.source_date_epoch.as_deref()).map_err(CommandError::Epoch)?;
    let pack_opts = PackOptions {
        format: req.format,
        compression: req.compression,
        reference: &reference,
        config: &image_config,
        epoch,
    };
    let failed = |e: pack::PackError| CommandError::Pack(Box::new(e));
    match req.file {
        None => {
            let stdout = io::stdout();
            let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
            pack::pack(&image, &mut out, &pack_opts).map_err(failed)?;
            out.flush()
                .map_err(|e| write_error(Path::new("stdout"), e))?;
        }
        Some(path) => {
            // Written beside it and renamed over it whole: an export that
            // fails leaves neither a partial file nor a lost old one.
            let (file, tmp) = create_temp(path)?;
            let result = (|| {
                let mut out = BufWriter::with_capacity(1 << 20, file);
                pack::pack(&image, &mut out, &pack_opts).map_err(failed)?;
                let file = out
                    .into_inner()
                    .map_err(|e| write_error(&tmp, e.into_error()))?;
                file.sync_all().map_err(|e| write_error(&tmp, e))?;
                std::fs::rename(&tmp, path).map_err(|e| write_error(path, e))
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result?;
        }
    }
    Ok(0)
}

/// An archive's image config: the image's own (from an `!Image`), with
/// the container's `environ` over its Env, as a cella run sees them.
fn archive_config(image: &Image, cont: &Container) -> ImageConfig {
    let mut config = image.info.config.clone().unwrap_or_default();
    for (name, value) in &cont.environ {
        let prefix = format!("{name}=");
        config.env.retain(|v| !v.starts_with(&prefix));
        config.env.push(format!("{name}={value}"));
    }
    config
}

/// A new file beside `path` to write the export into: created with
/// O_EXCL, so a link a project planted under that name (the target is
/// often in the checkout) is never followed.
fn create_temp(path: &Path) -> Result<(File, PathBuf), CommandError> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut last = None;
    for n in 0..100u32 {
        let tmp = path.with_file_name(format!(".{name}.cella-{}-{n}.tmp", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
        {
            Ok(file) => return Ok((file, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some((tmp, e)),
            Err(e) => return Err(write_error(&tmp, e)),
        }
    }
    let (tmp, e) =
        last.unwrap_or_else(|| (path.to_path_buf(), io::ErrorKind::AlreadyExists.into()));
    Err(write_error(&tmp, e))
}

fn write_error(path: &Path, source: io::Error) -> CommandError {
    CommandError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// `cella _push_image CONTAINER docker://HOST/NAME:TAG`: the image as an
/// OCI archive (in `.cella/tmp/`, removed after), pushed to a registry.
pub fn push_image(
    config: &Config,
    name: &str,
    dest: &RegistryRef,
    dest_text: &str,
    opts: &RunOptions,
) -> Result<i32, CommandError> {
    let cont = container(config, name)?;
    let project = Project::open(config)?;
    let image = image_for_run(config, &project, name, opts)?;
    let image_config = archive_config(&image, cont);
    let epoch =
        version::epoch(opts.knobs.source_date_epoch.as_deref()).map_err(CommandError::Epoch)?;
    let reference = format!("{}:{}", dest.repository, dest.tag);
    let pack_opts = PackOptions {
        format: PackFormat::OciArchive,
        compression: Compression::None,
        reference: &reference,
        config: &image_config,
        epoch,
    };
    let tmp_dir = project
        .store
        .subdir("tmp")
        .map_err(|e| CommandError::Host(e.0))?;
    let rel = PathBuf::from(format!("push.{}.tar", std::process::id()));
    let _ = tmp_dir.remove_file(&rel);
    let file = tmp_dir.create_new(&rel, 0o600)?;
    let result = (|| {
        let mut out = BufWriter::with_capacity(1 << 20, file);
        pack::pack(&image, &mut out, &pack_opts).map_err(|e| CommandError::Pack(Box::new(e)))?;
        out.flush()
            .map_err(|e| write_error(&tmp_dir.display(&rel), e))?;
        drop(out);
        push::push(&tmp_dir, &rel, dest, &fetch_ctx(opts))
            .map_err(|e| CommandError::Push(Box::new(e)))
    })();
    let _ = tmp_dir.remove_file(&rel);
    let digest = result?;
    println!("{dest_text}@{digest}");
    Ok(0)
}
