//! The scalars that name images and archives: OCI digests and tags,
//! registries, `docker://` references (Docker's grammar), and the
//! directory of an archive `!Tar` unpacks.

use super::scalars::sha256;

/// An OCI digest as `!Image`'s `digest` takes it: `sha256:` and 64 hex
/// digits (lowercased).
pub(super) fn oci_digest(text: &str) -> Result<String, String> {
    match text.strip_prefix("sha256:").map(sha256) {
        Some(Ok(hex)) => Ok(format!("sha256:{hex}")),
        _ => Err(format!(
            "expected a digest: sha256: and 64 hex digits, found {text:?}"
        )),
    }
}

/// An image's name in an OCI layout, as its ref-name annotation holds it
/// (a tag, `1.0`, or a whole name, `localhost/app:1.0`): 1 to 255 of
/// `[A-Za-z0-9_.-/:@]`, starting with a letter or digit.
pub(super) fn image_tag(text: &str) -> Result<String, String> {
    let ok = text.len() <= 255
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/' | b':' | b'@')
        });
    match ok {
        true => Ok(text.to_owned()),
        false => Err(format!(
            "expected a tag: 1 to 255 letters, digits, '_', '.', '-', '/', ':' or '@', \
             starting with a letter or digit, found {text:?}"
        )),
    }
}

/// A registry as references and auth files name it: `HOST[:PORT]`, a DNS
/// name or an IPv4 address (lowercased).
pub fn registry_host(text: &str) -> Result<String, String> {
    let bad = || format!("expected a registry HOST[:PORT], found {text:?}");
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
            return Err(bad());
        }
    }
    // A name or address as the strict URL parser takes hosts.
    if super::netpolicy::host_name(host).is_none() {
        return Err(bad());
    }
    Ok(text.to_ascii_lowercase())
}

/// What follows `docker://`: `[HOST[:PORT]/]NAME[:TAG][@sha256:HEX]`, by
/// Docker's rules: the first component is a host when it has a `.` or
/// a `:` or is `localhost`; NAME's components are lowercase
/// `[a-z0-9]+([._-][a-z0-9]+)*`; the tag is `[A-Za-z0-9_][A-Za-z0-9_.-]*`
/// (at most 128). Returns the reference and its digest, if any.
pub(super) fn registry_ref(
    text: &str,
) -> Result<(super::model::RegistryRef, Option<String>), String> {
    let bad = |why: &str| format!("{why} in docker://{text}");
    if text.len() > 512 {
        return Err(bad("a reference of more than 512 bytes"));
    }
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => (rest, Some(oci_digest(digest)?)),
        None => (text, None),
    };
    let (registry, path) = match rest.split_once('/') {
        Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
            (Some(registry_host(first)?), path)
        }
        _ => (None, rest),
    };
    let (name, tag) = match path.rsplit_once(':') {
        Some((name, tag)) => (name, Some(tag)),
        None => (path, None),
    };
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.split(['.', '_', '-']).all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
    };
    if name.is_empty() || !name.split('/').all(component_ok) {
        return Err(bad("expected a lowercase image name"));
    }
    let tag = match tag {
        Some(tag) => {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && !tag.starts_with(['.', '-'])
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return Err(bad("expected a tag of letters, digits, '_', '.' and '-'"));
            }
            tag.to_owned()
        }
        None => "latest".to_owned(),
    };
    Ok((
        super::model::RegistryRef {
            registry,
            repository: name.to_owned(),
            tag,
        },
        digest,
    ))
}

/// A directory inside an archive (`!Tar`'s `subdir`): relative, without
/// `..`, normalised; `.` (the whole archive) is none.
pub(super) fn archive_dir(text: &str) -> Result<Option<String>, String> {
    let mut parts = Vec::new();
    for c in text.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(format!(
                    "expected a directory inside the archive, found {text:?}"
                ))
            }
            c => parts.push(c),
        }
    }
    if text.starts_with('/') {
        return Err(format!(
            "expected a directory relative to the archive's root, found {text:?}"
        ));
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}
