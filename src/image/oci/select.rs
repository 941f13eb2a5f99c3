//! Which image an index names: the manifest tagged as asked (the
//! `org.opencontainers.image.ref.name` annotation, as skopeo reads it),
//! through nested indexes and Docker manifest lists to the linux/amd64
//! manifest; or a docker-archive's `manifest.json`. Every JSON file read
//! is capped and, when a descriptor names it, checked against its digest
//! and size first.

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::OciError;
use super::source::{Blobs, Endpoint};

/// The largest index, manifest or docker-archive manifest.json read.
const MAX_MANIFEST: u64 = 4 << 20;
/// The largest image config read (a long history makes them big).
const MAX_CONFIG: u64 = 8 << 20;
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// How deep indexes may nest.
const MAX_DEPTH: usize = 4;
/// The most layers an image may have (Docker's own limit is 127).
const MAX_LAYERS: usize = 500;

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// An image, chosen: what names it and what to apply.
#[derive(Debug)]
pub struct Resolved {
    /// `sha256:…` of its manifest (of a docker-archive: of its config).
    pub digest: String,
    /// `sha256:…` of what the reference names first: the manifest, or the
    /// index it was picked from (what a `digest` pin and a tag name).
    pub top: String,
    pub config: ImageConfiguration,
    pub(super) layers: Vec<Layer>,
}

/// A layer to apply.
#[derive(Debug)]
pub(super) struct Layer {
    /// Its file among the blobs.
    pub path: String,
    /// Its size as declared (a docker-archive declares none).
    pub size: Option<u64>,
    /// Its name in messages: the blob digest (docker-archive: diff_id).
    pub digest: String,
    /// What its bytes must hash to, `sha256:…`.
    pub verify: String,
}

fn blob_path(desc: &Descriptor) -> Result<String, String> {
    let digest = desc.digest();
    let hex = digest.digest();
    if digest.algorithm().to_string() != "sha256" {
        return Err(format!(
            "digest {digest}: only sha256 digests are supported"
        ));
    }
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("digest {digest} is not a sha256"));
    }
    Ok(format!("blobs/sha256/{hex}"))
}

/// The JSON blob `desc` names (from a registry: at `endpoint`), checked
/// against its size and digest.
fn read_blob(
    blobs: &Blobs,
    desc: &Descriptor,
    max: u64,
    endpoint: Endpoint,
) -> Result<Vec<u8>, OciError> {
    let digest = desc.digest().to_string();
    let bad = |message: String| OciError::Blob {
        path: blobs.shown().to_path_buf(),
        digest: digest.clone(),
        message,
    };
    let path = blob_path(desc).map_err(bad)?;
    if desc.size() > max {
        return Err(bad(format!(
            "its descriptor says {} bytes, more than the {max} cella reads",
            desc.size()
        )));
    }
    blobs.ensure(&digest, Some(desc.size()), max, endpoint, "")?;
    let bytes = blobs.read_small(&path, max)?;
    if bytes.len() as u64 != desc.size() {
        return Err(bad(format!(
            "it is {} bytes, its descriptor says {}",
            bytes.len(),
            desc.size()
        )));
    }
    let actual = sha256(&bytes);
    if actual != digest {
        return Err(bad(format!("its content hashes to {actual}")));
    }
    Ok(bytes)
}

/// `sha256:` and 64 hex digits.
fn is_sha256(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn json<'a, T: Deserialize<'a>>(
    blobs: &Blobs,
    name: &str,
    what: &'static str,
    bytes: &'a [u8],
) -> Result<T, OciError> {
    serde_json::from_slice(bytes).map_err(|source| OciError::Json {
        path: blobs.shown().join(name),
        what,
        source,
    })
}

fn media_type(desc: &Descriptor) -> String {
    desc.media_type().to_string()
}

fn is_linux_amd64(desc: &Descriptor) -> Option<bool> {
    let p = desc.platform().as_ref()?;
    Some(p.os().to_string() == "linux" && p.architecture().to_string() == "amd64")
}

/// An OCI layout (directory or archive): the manifest `tag` names, or
/// the only one.
pub(super) fn oci(blobs: &Blobs, tag: Option<&str>) -> Result<Resolved, OciError> {
    let shown = || blobs.shown().to_path_buf();
    if blobs.open("oci-layout")?.is_none() {
        return Err(OciError::Bad {
            path: shown(),
            message: "it is not an OCI image layout: it has no oci-layout file".to_owned(),
        });
    }
    let bytes = blobs.read_small("index.json", MAX_MANIFEST)?;
    let index: ImageIndex = json(blobs, "index.json", "the index", &bytes)?;
    let tagged: Vec<&Descriptor> = match tag {
        Some(tag) => index
            .manifests()
            .iter()
            .filter(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_some_and(|name| name == tag)
            })
            .collect(),
        None => index.manifests().iter().collect(),
    };
    let desc = match tagged.as_slice() {
        [one] => (*one).clone(),
        [] if tag.is_some() => {
            return Err(OciError::Bad {
                path: shown(),
                message: format!(
                    "it has no image tagged {:?}{}",
                    tag.unwrap_or_default(),
                    tags_of(&index)
                ),
            })
        }
        [] => {
            return Err(OciError::Bad {
                path: shown(),
                message: "its index.json lists no image".to_owned(),
            })
        }
        many => match pick_platform(many) {
            Some(desc) => desc.clone(),
            None => {
                return Err(OciError::Bad {
                    path: shown(),
                    message: format!(
                        "it holds {} images; name one as oci:PATH:TAG{}",
                        many.len(),
                        tags_of(&index)
                    ),
                })
            }
        },
    };
    let mut resolved = manifest(blobs, &desc, 0)?;
    resolved.top = desc.digest().to_string();
    Ok(resolved)
}

/// "(tags: a, b)" for a message.
fn tags_of(index: &ImageIndex) -> String {
    let tags: Vec<String> = index
        .manifests()
        .iter()
        .filter_map(|d| d.annotations().as_ref()?.get(REF_NAME).cloned())
        .map(|t| crate::text::escape(&t).into_owned())
        .collect();
    match tags.is_empty() {
        true => String::new(),
        false => format!(" (tags: {})", tags.join(", ")),
    }
}

/// Among descriptors that all name platforms, the linux/amd64 one.
fn pick_platform<'d>(descs: &[&'d Descriptor]) -> Option<&'d Descriptor> {
    descs
        .iter()
        .find(|d| is_linux_amd64(d) == Some(true))
        .copied()
}

/// The manifest (or index, followed to its linux/amd64 manifest) `desc`
/// names, resolved to its config and layers.
fn manifest(blobs: &Blobs, desc: &Descriptor, depth: usize) -> Result<Resolved, OciError> {
    let digest = desc.digest().to_string();
    let bad = |message: String| OciError::Blob {
        path: blobs.shown().to_path_buf(),
        digest: digest.clone(),
        message,
    };
    if is_linux_amd64(desc) == Some(false) {
        let p = desc.platform().as_ref();
        let os = p.map(|p| p.os().to_string()).unwrap_or_default();
        let arch = p.map(|p| p.architecture().to_string()).unwrap_or_default();
        return Err(bad(format!(
            "it is for {}/{}, cella runs linux/amd64",
            crate::text::escape(&os),
            crate::text::escape(&arch)
        )));
    }
    let kind = media_type(desc);
    let bytes = read_blob(blobs, desc, MAX_MANIFEST, Endpoint::Manifests)?;
    if INDEX_TYPES.contains(&kind.as_str()) {
        if depth >= MAX_DEPTH {
            return Err(bad(format!("indexes nest more than {MAX_DEPTH} deep")));
        }
        let index: ImageIndex = json(blobs, &digest, "the index", &bytes)?;
        let all: Vec<&Descriptor> = index.manifests().iter().collect();
        let next = pick_platform(&all)
            .ok_or_else(|| bad("the index has no linux/amd64 image".to_owned()))?;
        return manifest(blobs, next, depth + 1);
    }
    if !MANIFEST_TYPES.contains(&kind.as_str()) {
        return Err(bad(format!(
            "unknown media type {}",
            crate::text::escape(&kind)
        )));
    }
    let manifest: ImageManifest = json(blobs, &digest, "the manifest", &bytes)?;
    let config_desc = manifest.config();
    let config_kind = media_type(config_desc);
    if !CONFIG_TYPES.contains(&config_kind.as_str()) {
        return Err(OciError::Blob {
            path: blobs.shown().to_path_buf(),
            digest: config_desc.digest().to_string(),
            message: format!(
                "the config has the unknown media type {}",
                crate::text::escape(&config_kind)
            ),
        });
    }
    let config_bytes = read_blob(blobs, config_desc, MAX_CONFIG, Endpoint::Blobs)?;
    let config: ImageConfiguration = json(
        blobs,
        config_desc.digest().as_ref(),
        "the image config",
        &config_bytes,
    )?;
    check_platform(blobs, &config)?;
    if manifest.layers().len() > MAX_LAYERS {
        return Err(bad(format!("it has more than {MAX_LAYERS} layers")));
    }
    let mut layers = Vec::with_capacity(manifest.layers().len());
    for layer in manifest.layers() {
        let layer_digest = layer.digest().to_string();
        let kind = media_type(layer);
        let layer_bad = |message: String| OciError::Blob {
            path: blobs.shown().to_path_buf(),
            digest: layer_digest.clone(),
            message,
        };
        if !LAYER_TYPES.contains(&kind.as_str()) {
            return Err(layer_bad(format!(
                "the layer has the unknown media type {}",
                crate::text::escape(&kind)
            )));
        }
        layers.push(Layer {
            path: blob_path(layer).map_err(layer_bad)?,
            size: Some(layer.size()),
            digest: layer_digest.clone(),
            verify: layer_digest,
        });
    }
    Ok(Resolved {
        top: digest.clone(),
        digest,
        config,
        layers,
    })
}

fn check_platform(blobs: &Blobs, config: &ImageConfiguration) -> Result<(), OciError> {
    let (os, arch) = (config.os().to_string(), config.architecture().to_string());
    let (os, arch) = (crate::text::escape(&os), crate::text::escape(&arch));
    if os != "linux" || arch != "amd64" {
        return Err(OciError::Bad {
            path: blobs.shown().to_path_buf(),
            message: format!("the image is for {os}/{arch}, cella runs linux/amd64"),
        });
    }
    Ok(())
}

/// A registry's image: the manifest `pinned` names, else the one `tag`
/// names now (an index followed to its linux/amd64 manifest).
pub(super) fn registry(
    blobs: &Blobs,
    pinned: Option<&str>,
    tag: &str,
) -> Result<Resolved, OciError> {
    let digest = match pinned {
        Some(digest) => digest.to_owned(),
        None => blobs.tag_digest(tag, MAX_MANIFEST)?,
    };
    let bad = |message: String| OciError::Blob {
        path: blobs.shown().to_path_buf(),
        digest: digest.clone(),
        message,
    };
    blobs.ensure(&digest, None, MAX_MANIFEST, Endpoint::Manifests, "")?;
    let hex = digest.trim_start_matches("sha256:");
    let bytes = blobs.read_small(&format!("blobs/sha256/{hex}"), MAX_MANIFEST)?;
    // What the registry serves it as is in the manifest itself (both
    // OCI's and Docker's say so; an OCI one may leave it out).
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let shape: Shape = json(blobs, &digest, "the manifest", &bytes)?;
    let media_type = match (shape.media_type, shape.manifests) {
        (Some(t), _) => t,
        (None, Some(_)) => INDEX_TYPES[0].to_owned(),
        (None, None) => MANIFEST_TYPES[0].to_owned(),
    };
    let parsed: oci_spec::image::Digest =
        digest.parse().map_err(|_| bad("not a digest".to_owned()))?;
    let desc = Descriptor::new(media_type.as_str().into(), bytes.len() as u64, parsed);
    let mut resolved = manifest(blobs, &desc, 0)?;
    resolved.top = digest;
    Ok(resolved)
}

/// One image of a docker-archive's manifest.json.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerImage {
    config: String,
    #[serde(default)]
    layers: Vec<String>,
}

/// A docker-archive: its manifest.json's only image. Its layers are
/// checked against the config's diff_ids (they are stored uncompressed).
pub(super) fn docker(blobs: &Blobs) -> Result<Resolved, OciError> {
    let shown = || blobs.shown().to_path_buf();
    let bytes = blobs.read_small("manifest.json", MAX_MANIFEST)?;
    let images: Vec<DockerImage> = json(blobs, "manifest.json", "manifest.json", &bytes)?;
    let image = match images.as_slice() {
        [one] => one,
        [] => {
            return Err(OciError::Bad {
                path: shown(),
                message: "its manifest.json lists no image".to_owned(),
            })
        }
        many => {
            return Err(OciError::Bad {
                path: shown(),
                message: format!(
                    "its manifest.json lists {} images; cella reads archives of one",
                    many.len()
                ),
            })
        }
    };
    let names = std::iter::once(&image.config).chain(&image.layers);
    if let Some(name) = names.into_iter().find(|n| n.chars().any(char::is_control)) {
        return Err(OciError::Bad {
            path: shown(),
            message: format!("its manifest.json names a file {name:?}"),
        });
    }
    let config_bytes = blobs.read_small(&image.config, MAX_CONFIG)?;
    let digest = sha256(&config_bytes);
    let config: ImageConfiguration = json(blobs, &image.config, "the image config", &config_bytes)?;
    check_platform(blobs, &config)?;
    let diff_ids = config.rootfs().diff_ids();
    if let Some(id) = diff_ids.iter().find(|d| !is_sha256(d)) {
        return Err(OciError::Bad {
            path: shown(),
            message: format!("its config has a diff_id {id:?} that is not a sha256 digest"),
        });
    }
    if diff_ids.len() != image.layers.len() {
        return Err(OciError::Bad {
            path: shown(),
            message: format!(
                "manifest.json lists {} layers, the config {} diff_ids",
                image.layers.len(),
                diff_ids.len()
            ),
        });
    }
    if image.layers.len() > MAX_LAYERS {
        return Err(OciError::Bad {
            path: shown(),
            message: format!("it has more than {MAX_LAYERS} layers"),
        });
    }
    let layers = image
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(path, diff_id)| Layer {
            path: path.trim_start_matches("./").to_owned(),
            size: None,
            digest: diff_id.clone(),
            verify: diff_id.clone(),
        })
        .collect();
    Ok(Resolved {
        top: digest.clone(),
        digest,
        config,
        layers,
    })
}
