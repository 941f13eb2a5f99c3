//! `!Image`: an OCI (or Docker) image's layers applied in order straight
//! into the image tree, its config kept as the container's defaults.
//!
//! The image comes from the project (an OCI layout directory, an OCI
//! archive, a docker-archive) and is untrusted: every JSON file is size
//! capped before it is parsed, every blob must be a regular file of
//! exactly the size its descriptor declares, is read no further, and
//! must hash to its digest; layers go through `tar_import` like `!Tar`'s
//! tarballs (compression told by content, decompression bounded, nothing
//! written on the host but the image file). The image and manifest types
//! are oci-spec's; the choice of manifest and the whiteouts are ours.

mod error;
pub mod push;
mod registry;
mod select;
mod source;
#[cfg(test)]
mod tests;

use std::io::{self, BufReader, Read};
use std::path::PathBuf;

use ipnet::Ipv4Net;

use oci_spec::image::ImageConfiguration;

use super::download::Fetcher;
use super::erofs::ImageWriter;
use super::fileio::HashingReader;
use super::progress::{Progress, ProgressReader};
use super::store::ImageConfig;
use super::tar_import;
use super::tree::Tree;
use crate::config::netpolicy::AddressGuard;
use crate::config::{ImageSource, ImageStep};
use crate::hostfs::Dir;
pub use error::OciError;
use registry::Client;
use select::Layer;
pub use select::Resolved;
use source::{Blobs, Endpoint};

/// What cella's fetches for a project (registries, `!Tar` and
/// `!Download` URLs) need: the user's settings and cache.
#[derive(Debug, Clone, Default)]
pub struct FetchCtx {
    /// The registry of a reference without a host (settings).
    pub default: String,
    /// Registries reached over plain http (settings).
    pub insecure: Vec<String>,
    /// Non-public addresses the user allows (settings, --allow-address).
    pub allow: Vec<Ipv4Net>,
    /// The user's cache directory: blobs go to `oci/blobs/sha256/`,
    /// downloads to `downloads/`.
    pub cache: Option<PathBuf>,
    /// The most bytes one download may have (limits.image).
    pub max_download: u64,
    /// The most bytes the downloads in the cache may take (limits.downloads).
    pub keep_downloads: u64,
}

impl FetchCtx {
    /// The fetcher of `!Tar` and `!Download` URLs.
    pub fn fetcher(&self) -> Fetcher<'_> {
        Fetcher {
            cache: self.cache.as_deref(),
            guard: AddressGuard::new(&self.allow),
            max: self.max_download,
            keep: self.keep_downloads,
        }
    }
}

/// Where a step's image is read from.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    /// The project: layouts and archives are its files.
    pub project: &'a Dir,
    pub registry: &'a FetchCtx,
    /// What the reference was resolved to when the container's id was
    /// computed (`Resolved::top`): a registry tag is not asked again, and
    /// a layout or archive that changed since is refused.
    pub pinned: Option<&'a str>,
}

/// Opens the step's image source.
fn open(src: &Source<'_>, step: &ImageStep) -> Result<Blobs, OciError> {
    match &step.source {
        ImageSource::Layout { rel, .. } => Blobs::dir(src.project, rel),
        ImageSource::OciArchive { rel, .. } | ImageSource::DockerArchive { rel } => {
            Blobs::archive(src.project, rel)
        }
        ImageSource::Registry(r) => {
            let ctx = src.registry;
            let registry = r.registry.as_deref().unwrap_or(&ctx.default);
            let client = Client::new(
                registry,
                &r.repository,
                &ctx.insecure,
                AddressGuard::new(&ctx.allow),
            );
            let cache = ctx.cache.as_deref().ok_or_else(|| OciError::Bad {
                path: PathBuf::from(&step.reference),
                message: "there is no cache directory to pull into: set CELLA_CACHE_DIR or HOME"
                    .to_owned(),
            })?;
            Blobs::registry(cache, client)
        }
    }
}

/// The image the step names: which manifest (its digest names the image
/// in the container's version), config and layers. Reads only the small
/// JSON files, each verified (from a registry: fetched into the cache).
pub fn resolve(src: &Source<'_>, step: &ImageStep) -> Result<Resolved, OciError> {
    let blobs = open(src, step)?;
    resolve_in(&blobs, src, step)
}

fn resolve_in(blobs: &Blobs, src: &Source<'_>, step: &ImageStep) -> Result<Resolved, OciError> {
    let resolved = match &step.source {
        ImageSource::Layout { tag, .. } | ImageSource::OciArchive { tag, .. } => {
            select::oci(blobs, tag.as_deref())?
        }
        ImageSource::DockerArchive { .. } => select::docker(blobs)?,
        ImageSource::Registry(r) => {
            let pinned = src.pinned.or(step.digest.as_deref());
            select::registry(blobs, pinned, &r.tag)?
        }
    };
    if let Some(digest) = &step.digest {
        if *digest != resolved.top && *digest != resolved.digest {
            return Err(OciError::Bad {
                path: blobs.shown().to_path_buf(),
                message: format!(
                    "the image is {}, not the {digest} that `digest` asks for",
                    resolved.top
                ),
            });
        }
    }
    if let Some(pinned) = src.pinned {
        if pinned != resolved.top {
            return Err(OciError::Bad {
                path: blobs.shown().to_path_buf(),
                message: format!(
                    "it changed while cella read it: it was {pinned}, it is {}",
                    resolved.top
                ),
            });
        }
    }
    Ok(resolved)
}

/// Applies the step's image to `tree` (layers in order, whiteouts
/// honoured), writing file data through `writer`; returns its config.
pub fn import(
    src: &Source<'_>,
    step: &ImageStep,
    tree: &mut Tree,
    writer: &mut ImageWriter<'_>,
) -> Result<ImageConfig, OciError> {
    let blobs = open(src, step)?;
    let resolved = resolve_in(&blobs, src, step)?;
    let total = resolved.layers.len();
    for (i, layer) in resolved.layers.iter().enumerate() {
        let item = format!("layer {}/{total}", i + 1);
        let layer_err = |e| OciError::Layer {
            path: blobs.shown().to_path_buf(),
            number: i + 1,
            total,
            digest: layer.digest.clone(),
            source: Box::new(e),
        };
        blobs
            .ensure(
                &layer.verify,
                layer.size,
                src.registry.max_download,
                Endpoint::Blobs,
                &item,
            )
            .map_err(layer_err)?;
        apply_layer(&blobs, layer, tree, writer, &item).map_err(layer_err)?;
    }
    Ok(config_of(&resolved.config))
}

/// One layer blob: exactly its declared size, hashed as it is read, its
/// tar applied over the tree.
fn apply_layer(
    blobs: &Blobs,
    layer: &Layer,
    tree: &mut Tree,
    writer: &mut ImageWriter<'_>,
    item: &str,
) -> Result<(), OciError> {
    let name = &layer.path;
    let shown = blobs.shown().join(name);
    let blob_err = |message: String| OciError::Blob {
        path: blobs.shown().to_path_buf(),
        digest: layer.digest.clone(),
        message,
    };
    let (size, reader) = blobs
        .open(name)?
        .ok_or_else(|| blob_err("it is missing".to_owned()))?;
    if let Some(declared) = layer.size {
        if size != declared {
            return Err(blob_err(format!(
                "it is {size} bytes, its manifest says {declared}"
            )));
        }
    }
    let progress = Progress::item("importing", size, item.to_owned());
    let hashing = HashingReader::new(reader.take(size));
    let reader = ProgressReader::new(hashing, &progress);
    let rest = tar_import::import_layer(
        &shown,
        BufReader::with_capacity(64 << 10, reader),
        tree,
        writer,
    )?;
    // What follows the tar in the blob is hashed, not decompressed.
    let mut rest = rest.into_inner();
    let read = io::copy(&mut rest, &mut io::sink()).map_err(|source| OciError::Read {
        path: shown.clone(),
        source,
    })?;
    let _ = read;
    progress.finish();
    let actual = format!("sha256:{}", rest.into_inner().finish());
    if actual != layer.verify {
        return Err(blob_err(format!("its content hashes to {actual}")));
    }
    Ok(())
}

/// What cella keeps of an image config: the fields a run defaults to.
fn config_of(config: &ImageConfiguration) -> ImageConfig {
    let Some(c) = config.config() else {
        return ImageConfig::default();
    };
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    ImageConfig {
        env: c.env().clone().unwrap_or_default(),
        entrypoint: c.entrypoint().clone(),
        cmd: c.cmd().clone(),
        working_dir: nonempty(c.working_dir()),
        user: nonempty(c.user()),
        uid: None,
        gid: None,
    }
}

/// Resolves `config.user` against the image's /etc/passwd and /etc/group
/// (read from `tree`, data in `work`) as runc does: `uid`, `name`,
/// `uid:gid`, `name:group`; a numeric uid not in passwd has gid 0.
pub fn resolve_user(
    config: &mut ImageConfig,
    tree: &Tree,
    work: &std::fs::File,
) -> Result<(), OciError> {
    let Some(user) = config.user.clone() else {
        return Ok(());
    };
    let read = |path: &'static str| {
        super::apt::text_file(tree, work, path)
            .map(Option::unwrap_or_default)
            .map_err(|source| OciError::ImageFile { path, source })
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user.as_str(), None),
    };
    let bad = |message: String| OciError::User {
        user: user.clone(),
        message,
    };
    let passwd = read("/etc/passwd")?;
    let entry = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        let (name, uid, gid) = (f.first()?, f.get(2)?.parse::<u32>().ok()?, f.get(3)?);
        (*name == u || uid.to_string() == u).then(|| (uid, gid.parse::<u32>().ok()))
    });
    let (uid, passwd_gid) = match (u.parse::<u32>(), entry) {
        (Ok(uid), entry) => (uid, entry.and_then(|e| e.1)),
        (Err(_), Some((uid, gid))) => (uid, gid),
        (Err(_), None) => {
            return Err(bad(format!(
                "there is no user {u:?} in the image's /etc/passwd"
            )))
        }
    };
    let gid = match g {
        None => passwd_gid.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => read("/etc/group")?
                .lines()
                .find_map(|line| {
                    let f: Vec<&str> = line.split(':').collect();
                    (f.first() == Some(&g)).then(|| f.get(2)?.parse::<u32>().ok())?
                })
                .ok_or_else(|| bad(format!("there is no group {g:?} in the image's /etc/group")))?,
        },
    };
    config.uid = Some(uid);
    config.gid = Some(gid);
    Ok(())
}
