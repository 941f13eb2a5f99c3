//! `cella _push_image CONTAINER docker://…`: the image's OCI archive
//! (as `_pack_image` writes it) pushed to a registry with the
//! distribution API: each blob the registry lacks is uploaded whole
//! (POST, then PUT with its digest), then the manifest is put under the
//! tag. Connections, plain http and credentials follow the same rules as
//! a pull.

use std::path::Path;

use oci_spec::image::ImageManifest;

use super::error::OciError;
use super::registry::{Client, Verb};
use super::source::Blobs;
use super::{select, FetchCtx};
use crate::config::netpolicy::AddressGuard;
use crate::config::RegistryRef;
use crate::hostfs::Dir;

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// Pushes the OCI archive `rel` of `dir` to `dest`; returns the
/// manifest's digest.
pub fn push(dir: &Dir, rel: &Path, dest: &RegistryRef, ctx: &FetchCtx) -> Result<String, OciError> {
    let blobs = Blobs::archive(dir, rel)?;
    let resolved = select::oci(&blobs, None)?;
    let hex = resolved.digest.trim_start_matches("sha256:");
    let manifest_bytes = blobs.read_small(&format!("blobs/sha256/{hex}"), 4 << 20)?;
    let manifest: ImageManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|source| OciError::Json {
            path: blobs.shown().to_path_buf(),
            what: "the manifest",
            source,
        })?;
    let registry = dest.registry.as_deref().unwrap_or(&ctx.default);
    let mut client = Client::new(
        registry,
        &dest.repository,
        &ctx.insecure,
        AddressGuard::new(&ctx.allow),
    );
    client.push = true;
    let failed = |what: String, e: super::registry::RegistryError| OciError::Bad {
        path: format!("docker://{}", client.shown()).into(),
        message: format!("{what}: {}", crate::text::error_chain(&e, ": ")),
    };
    let config = manifest.config();
    let mut uploads: Vec<(String, u64)> = vec![(config.digest().to_string(), config.size())];
    uploads.extend(
        manifest
            .layers()
            .iter()
            .map(|l| (l.digest().to_string(), l.size())),
    );
    for (digest, size) in &uploads {
        let (status, _) = client
            .send(Verb::Head, &format!("blobs/{digest}"), "", None)
            .map_err(|e| failed(format!("looking for blob {digest}"), e))?;
        if status == 200 {
            continue;
        }
        let (_, location) = client
            .send(Verb::Post, "blobs/uploads/", "", None)
            .map_err(|e| failed(format!("starting the upload of {digest}"), e))?;
        if location.is_empty() {
            return Err(failed(
                format!("starting the upload of {digest}"),
                super::registry::RegistryError::Refused {
                    url: client.shown(),
                    message: "the registry gave no upload location".to_owned(),
                },
            ));
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let target = format!("{location}{sep}digest={}", digest.replace(':', "%3A"));
        let hex = digest.trim_start_matches("sha256:");
        let (len, mut reader) =
            blobs
                .open(&format!("blobs/sha256/{hex}"))?
                .ok_or_else(|| OciError::Missing {
                    path: blobs.shown().join(format!("blobs/sha256/{hex}")),
                })?;
        if len != *size {
            return Err(OciError::Blob {
                path: blobs.shown().to_path_buf(),
                digest: digest.clone(),
                message: format!("it is {len} bytes, its manifest says {size}"),
            });
        }
        client
            .send(
                Verb::Put,
                &target,
                "application/octet-stream",
                Some((&mut reader, len)),
            )
            .map_err(|e| failed(format!("uploading blob {digest}"), e))?;
    }
    let media_type = manifest
        .media_type()
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_else(|| MANIFEST_TYPE.to_owned());
    client
        .send(
            Verb::Put,
            &format!("manifests/{}", dest.tag),
            &media_type,
            Some((&mut &manifest_bytes[..], manifest_bytes.len() as u64)),
        )
        .map_err(|e| failed(format!("putting the manifest as {}", dest.tag), e))?;
    Ok(resolved.digest)
}
