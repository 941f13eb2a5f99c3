//! A registry client for `!Image docker://…`: the distribution API's
//! manifest and blob GETs, on ureq (blocking, rustls; a maintained
//! client that fits a build which pulls one image at a time — oci-client
//! would bring tokio and reqwest for the same few requests).
//!
//! The registry is untrusted: every address a request connects to, the
//! registry's and every redirect's, passes the user's address guard at
//! resolve time (so a name cannot rebind to a private address between a
//! check and the connection); plain http only to registries the user
//! lists as insecure; redirects are followed by hand and the user's
//! credentials (or a token they bought) go only to the registry's own
//! host and port, and to the token realm it names over https. Bodies are
//! read no further than a cap or the size a descriptor declares; what
//! comes in is checked against its digest before the blob cache keeps it.

use std::fmt::Write as _;
use std::io::{self, Read};

use base64::Engine;
use ureq::http::Uri;
use ureq::Agent;

use crate::config::netpolicy::AddressGuard;

/// What a manifest request accepts, OCI's and Docker's.
pub(super) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";
/// Redirects followed per request.
const MAX_REDIRECTS: usize = 5;
/// The largest token response, auth file or error body read.
const MAX_SMALL: u64 = 1 << 20;

/// Why a registry request failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("GET {url}")]
    Http {
        url: String,
        #[source]
        source: ureq::Error,
    },
    #[error("GET {url}: the registry answered {status}{detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("GET {url}: {message}")]
    Refused { url: String, message: String },
    #[error("reading {url}")]
    Body {
        url: String,
        #[source]
        source: io::Error,
    },
}

/// The methods of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verb {
    Head,
    Post,
    Put,
}

/// One repository of one registry.
pub(super) struct Client {
    agent: Agent,
    /// `https://HOST[:PORT]` (or http for an insecure registry).
    base: String,
    /// `HOST[:PORT]` of the API, as URLs and auth files name it.
    authority: String,
    /// The repository path in the API (`library/debian`).
    pub repository: String,
    /// `user:password` from the user's auth files, base64 as sent.
    basic: Option<String>,
    /// A bearer token, once a challenge asked for one.
    token: std::cell::RefCell<Option<String>>,
    /// `HOST[:PORT]`s the user lets cella reach over plain http.
    insecure: Vec<String>,
    /// The client pushes: its tokens ask for `push` too.
    pub(super) push: bool,
}

/// What a GET gave: the final response's body.
pub(super) struct Fetched {
    pub reader: Box<dyn Read + Send>,
}

impl Client {
    /// A client of `repository` at `registry` (`HOST[:PORT]`; docker.io
    /// means Docker Hub's API host and its `library/` names).
    pub(super) fn new(
        registry: &str,
        repository: &str,
        insecure: &[String],
        guard: AddressGuard,
    ) -> Client {
        let hub = registry == "docker.io" || registry == "index.docker.io";
        let authority = match hub {
            true => "registry-1.docker.io".to_owned(),
            false => registry.to_owned(),
        };
        let repository = match hub && !repository.contains('/') {
            true => format!("library/{repository}"),
            false => repository.to_owned(),
        };
        let scheme = match insecure.iter().any(|h| h == registry) {
            true => "http",
            false => "https",
        };
        Client {
            agent: super::super::http::agent(guard),
            base: format!("{scheme}://{authority}"),
            authority,
            repository,
            basic: credentials(registry),
            token: std::cell::RefCell::new(None),
            insecure: insecure.to_vec(),
            push: false,
        }
    }

    /// GET `/v2/<repository>/<kind>/<reference>` (kind: manifests or
    /// blobs), answering an auth challenge once and following redirects.
    pub(super) fn get(
        &self,
        kind: &str,
        reference: &str,
        accept: &str,
    ) -> Result<Fetched, RegistryError> {
        let url = format!("{}/v2/{}/{kind}/{reference}", self.base, self.repository);
        let mut challenged = false;
        loop {
            let (response, own) = self.follow(&url, accept)?;
            let status = response.status().as_u16();
            if status == 401 && !own {
                // Only the registry may ask for the user's credentials,
                // not a host it redirected to.
                return Err(RegistryError::Status {
                    url,
                    status,
                    detail: " from a host the registry redirected to".to_owned(),
                });
            }
            if status == 401 && !challenged {
                challenged = true;
                let challenge = header(&response, "www-authenticate");
                self.authenticate(&url, &challenge)?;
                continue;
            }
            if status != 200 {
                let detail = error_detail(response);
                return Err(RegistryError::Status {
                    url,
                    status,
                    detail,
                });
            }
            return Ok(Fetched {
                reader: Box::new(response.into_body().into_reader()),
            });
        }
    }

    /// One GET with redirects followed by hand: credentials only to the
    /// registry itself.
    fn follow(
        &self,
        url: &str,
        accept: &str,
    ) -> Result<(ureq::http::Response<ureq::Body>, bool), RegistryError> {
        let mut url = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let uri: Uri = url.parse().map_err(|_| RegistryError::Refused {
                url: url.clone(),
                message: "not a valid URL".to_owned(),
            })?;
            let authority = uri.authority().map(|a| a.as_str().to_owned());
            let own = authority.as_deref() == Some(self.authority.as_str());
            let insecure = authority
                .as_deref()
                .is_some_and(|a| self.insecure.iter().any(|h| h == a));
            match uri.scheme_str() {
                Some("https") => {}
                Some("http") if insecure => {}
                _ => {
                    return Err(RegistryError::Refused {
                        url: url.clone(),
                        message: "cella follows a registry only to https URLs (plain http \
                                  only to hosts the settings list under registries.insecure)"
                            .to_owned(),
                    })
                }
            }
            let mut request = self.agent.get(&url).header("Accept", accept);
            if own {
                if let Some(auth) = self.authorization() {
                    request = request.header("Authorization", auth);
                }
            }
            let response = request.call().map_err(|source| RegistryError::Http {
                url: url.clone(),
                source,
            })?;
            if !response.status().is_redirection() {
                return Ok((response, own));
            }
            let location = header(&response, "location");
            url = resolve_location(&uri, &location).ok_or_else(|| RegistryError::Refused {
                url: url.clone(),
                message: format!("a redirect to {:?}", location),
            })?;
        }
        Err(RegistryError::Refused {
            url,
            message: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    fn authorization(&self) -> Option<String> {
        if let Some(token) = self.token.borrow().as_ref() {
            return Some(format!("Bearer {token}"));
        }
        self.basic.as_ref().map(|b| format!("Basic {b}"))
    }

    /// Answers a 401's challenge: `Bearer realm=…,service=…,scope=…`
    /// buys a token (with the user's credentials, if any); `Basic` needs
    /// credentials from the auth files.
    fn authenticate(&self, url: &str, challenge: &str) -> Result<(), RegistryError> {
        let refused = |message: String| RegistryError::Refused {
            url: url.to_owned(),
            message,
        };
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return match self.basic {
                // Sent already, and refused.
                Some(_) if self.token.borrow().is_none() => Err(refused(
                    "the registry refused the credentials in the auth file".into(),
                )),
                _ => Err(refused(format!(
                    "the registry wants a login; `podman login {}` stores one where cella reads it",
                    self.authority
                ))),
            };
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(refused(format!(
                "the registry asks for {} authentication, which cella does not speak",
                crate::text::escape(scheme)
            )));
        }
        let params = challenge_params(params);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let realm =
            get("realm").ok_or_else(|| refused("a Bearer challenge without a realm".into()))?;
        let realm_uri: Uri = realm
            .parse()
            .map_err(|_| refused(format!("a token realm {:?} that is not a URL", realm)))?;
        let plain_ok = realm_uri
            .authority()
            .is_some_and(|a| self.insecure.iter().any(|h| h == a.as_str()));
        if realm_uri.scheme_str() != Some("https") && !plain_ok {
            return Err(refused(format!("a token realm {realm} that is not https")));
        }
        let mut token_url = realm.to_owned();
        let mut sep = if realm.contains('?') { '&' } else { '?' };
        // A push needs the right to push, which a challenge to a HEAD or
        // a pull does not ask for.
        let scope = get("scope").map(|s| match self.push {
            true => s
                .replace(":pull", ":pull,push")
                .replace(":pull,push,push", ":pull,push"),
            false => s.to_owned(),
        });
        for (key, value) in [
            ("service", get("service").map(str::to_owned)),
            ("scope", scope),
        ] {
            if let Some(v) = value.as_deref() {
                token_url.push(sep);
                token_url.push_str(key);
                token_url.push('=');
                token_url.push_str(&urlencode(v));
                sep = '&';
            }
        }
        let mut request = self.agent.get(&token_url);
        if let Some(basic) = &self.basic {
            request = request.header("Authorization", format!("Basic {basic}"));
        }
        let response = request.call().map_err(|source| RegistryError::Http {
            url: token_url.clone(),
            source,
        })?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(RegistryError::Status {
                url: token_url,
                status,
                detail: " for a token".to_owned(),
            });
        }
        let mut body = Vec::new();
        response
            .into_body()
            .into_reader()
            .take(MAX_SMALL)
            .read_to_end(&mut body)
            .map_err(|source| RegistryError::Body {
                url: token_url.clone(),
                source,
            })?;
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let parsed: Token = serde_json::from_slice(&body)
            .map_err(|e| refused(format!("the token server's answer is not JSON: {e}")))?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| refused("the token server gave no token".into()))?;
        *self.token.borrow_mut() = Some(token);
        Ok(())
    }

    /// One HEAD, POST or PUT of `path` (below `/v2/<repository>/`, or a
    /// URL of the registry itself, as an upload's Location is), answering
    /// an auth challenge once (before a body is sent); no redirects. The
    /// status and the Location header of the answer.
    pub(super) fn send(
        &self,
        method: Verb,
        path: &str,
        content_type: &str,
        mut body: Option<(&mut dyn Read, u64)>,
    ) -> Result<(u16, String), RegistryError> {
        let url = match path.starts_with("http://") || path.starts_with("https://") {
            true => path.to_owned(),
            false if path.starts_with('/') => format!("{}{path}", self.base),
            false => format!("{}/v2/{}/{path}", self.base, self.repository),
        };
        let uri: Uri = url.parse().map_err(|_| RegistryError::Refused {
            url: url.clone(),
            message: "not a valid URL".to_owned(),
        })?;
        let scheme = self.base.split("://").next().unwrap_or("https");
        if uri.authority().map(|a| a.as_str()) != Some(self.authority.as_str())
            || uri.scheme_str() != Some(scheme)
        {
            return Err(RegistryError::Refused {
                url,
                message: format!("an upload goes only to the registry itself, over {scheme}"),
            });
        }
        let mut challenged = false;
        loop {
            let call = |auth: Option<String>, body: Option<(&mut dyn Read, u64)>| {
                let result = match method {
                    Verb::Head => {
                        let mut r = self.agent.head(&url);
                        if let Some(a) = auth {
                            r = r.header("Authorization", a);
                        }
                        r.call()
                    }
                    Verb::Post | Verb::Put => {
                        let mut r = match method {
                            Verb::Post => self.agent.post(&url),
                            _ => self.agent.put(&url),
                        };
                        if let Some(a) = auth {
                            r = r.header("Authorization", a);
                        }
                        match body {
                            Some((reader, len)) => r
                                .header("Content-Type", content_type)
                                .header("Content-Length", len.to_string())
                                .send(ureq::SendBody::from_reader(reader)),
                            None => r.send_empty(),
                        }
                    }
                };
                result.map_err(|source| RegistryError::Http {
                    url: url.clone(),
                    source,
                })
            };
            let sending = body.is_some();
            let response = call(self.authorization(), body.take())?;
            let status = response.status().as_u16();
            if status == 401 && !challenged && !sending {
                challenged = true;
                let challenge = header(&response, "www-authenticate");
                self.authenticate(&url, &challenge)?;
                continue;
            }
            let location = header(&response, "location");
            let detail = error_detail(response);
            // A HEAD that redirects (to the blob's storage) found the blob.
            if method == Verb::Head && (300..400).contains(&status) {
                return Ok((200, location));
            }
            if status >= 300 && !(method == Verb::Head && status == 404) {
                return Err(RegistryError::Status {
                    url,
                    status,
                    detail,
                });
            }
            return Ok((status, location));
        }
    }

    /// `HOST[:PORT]/REPOSITORY`, for messages.
    pub(super) fn shown(&self) -> String {
        format!("{}/{}", self.authority, self.repository)
    }
}

/// `: TEXT` of an answer's body (its first 4 KiB, escaped), or nothing.
fn error_detail(response: ureq::http::Response<ureq::Body>) -> String {
    let mut body = String::new();
    let _ = response
        .into_body()
        .into_reader()
        .take(4096)
        .read_to_string(&mut body);
    match body.trim() {
        "" => String::new(),
        text => format!(": {}", crate::text::escape(text)),
    }
}

fn header(response: &ureq::http::Response<ureq::Body>, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A redirect's Location made absolute against the URL that gave it.
fn resolve_location(from: &Uri, location: &str) -> Option<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location.to_owned());
    }
    if location.starts_with('/') && !location.starts_with("//") {
        return Some(format!(
            "{}://{}{location}",
            from.scheme_str()?,
            from.authority()?.as_str()
        ));
    }
    None
}

/// `k="v",k2="v2"` of a challenge.
fn challenge_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() && out.len() < 16 {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.split_once('"') {
                Some((v, a)) => (v, a),
                None => (quoted, ""),
            },
            None => after.split_once(',').unwrap_or((after, "")),
        };
        out.push((key, value.to_owned()));
        rest = after.trim_start_matches(',').trim();
    }
    out
}

fn urlencode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// `user:password` for `registry`, base64, from the first of the
/// standard auth files that has it: `$REGISTRY_AUTH_FILE`,
/// `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `~/.config/containers/auth.json`, `~/.docker/config.json`. The user's
/// own files (trusted), read with a size cap.
fn credentials(registry: &str) -> Option<String> {
    let mut files = Vec::new();
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(std::path::PathBuf::from(f));
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(std::path::Path::new(&d).join("containers/auth.json"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        let home = std::path::Path::new(&h);
        files.push(home.join(".config/containers/auth.json"));
        files.push(home.join(".docker/config.json"));
    }
    let keys: Vec<String> = match registry {
        "docker.io" | "index.docker.io" => vec![
            "docker.io".into(),
            "index.docker.io".into(),
            "https://index.docker.io/v1/".into(),
        ],
        r => vec![r.to_owned(), format!("https://{r}"), format!("http://{r}")],
    };
    for file in files {
        let Ok(f) = std::fs::File::open(&file) else {
            continue;
        };
        let mut text = Vec::new();
        if f.take(MAX_SMALL).read_to_end(&mut text).is_err() {
            continue;
        }
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&text) else {
            continue;
        };
        for key in &keys {
            let auth = json["auths"][key]["auth"].as_str();
            if let Some(auth) = auth.filter(|a| valid_basic(a)) {
                return Some(auth.to_owned());
            }
        }
    }
    None
}

/// A base64 `user:password`.
fn valid_basic(auth: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(auth)
        .is_ok_and(|d| d.contains(&b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_and_redirects() {
        let p = challenge_params(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#,
        );
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.docker.io/token".into()),
                ("service".into(), "registry.docker.io".into()),
                ("scope".into(), "repository:library/debian:pull".into()),
            ]
        );
        assert_eq!(
            urlencode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
        let from: Uri = "https://r.example:5000/v2/x/blobs/sha256:1"
            .parse()
            .expect("uri");
        assert_eq!(
            resolve_location(&from, "/store/1").as_deref(),
            Some("https://r.example:5000/store/1")
        );
        assert_eq!(resolve_location(&from, "//evil/x"), None);
        assert_eq!(resolve_location(&from, "relative"), None);
        assert!(valid_basic("dXNlcjpwYXNz"));
        assert!(!valid_basic("bm9jb2xvbg=="));
    }

    #[test]
    fn docker_hub_names() {
        let c = Client::new("docker.io", "debian", &[], AddressGuard::default());
        assert_eq!(c.shown(), "registry-1.docker.io/library/debian");
        assert!(c.base.starts_with("https://"));
        let c = Client::new(
            "127.0.0.1:5000",
            "a/b",
            &["127.0.0.1:5000".into()],
            AddressGuard::default(),
        );
        assert_eq!(c.base, "http://127.0.0.1:5000");
    }
}
