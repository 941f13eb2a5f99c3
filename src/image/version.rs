//! Image ids: the sha256 of a container's normalised setup steps, the
//! content of every host file they read (`!Tar`, `!Copy`, `!Depends`), the
//! ids of the images they use (`!Container`, `!Build`) and the build epoch.
//! Positions, the project's location and the container's own name are not
//! part of it: the same setup anywhere gives the same id.

use std::collections::BTreeMap;
use std::path::Path;

use crate::hostfs::{walk, Dir, Filter};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::host::{self, DigestCache, HostError};
use super::oci::{self, FetchCtx};
use super::FORMAT_VERSION;
use crate::config::{Config, Container, ImageSource, ImageStep, Network, Selection, Step};

/// Bump when the meaning of a step changes, so old images are rebuilt.
const STEPS_VERSION: &str = "cella-steps-2";

/// What ids are ids of: the steps' meaning and the image format. Locks
/// from a cella where it differs cannot match this one's ids.
pub fn image_format() -> String {
    format!("{STEPS_VERSION}/{FORMAT_VERSION}")
}

/// Why an id could not be computed: an input of a step could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{at}: cannot read the step's input")]
pub struct VersionError {
    /// `cella.yaml:7:7: containers.base.setup[2]`.
    pub at: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Computes and remembers the ids of a config's containers.
pub struct Versions<'a> {
    config: &'a Config,
    /// The project directory: every input is read beneath it.
    project: &'a Dir,
    /// The project's `.cella/`, where the digest cache lives (none: no cache).
    state: Option<&'a Dir>,
    cache: DigestCache,
    ids: BTreeMap<String, String>,
    /// The normalised steps behind each id in `ids`.
    setups: BTreeMap<String, Vec<Value>>,
    epoch: i64,
    /// Where `!Image docker://…` pulls from.
    registry: FetchCtx,
    /// Registry tags and the manifest digests they were resolved to,
    /// kept in `.cella/tags.json`: a tag is asked for once, and its
    /// image changes only when `pull` asks again.
    tags: BTreeMap<String, String>,
    tags_changed: bool,
    pull: bool,
    /// What each `!Image` reference resolved to (`Resolved::top`) for
    /// the ids: the build must import that very image.
    resolved: BTreeMap<String, String>,
}

/// Where the resolved registry tags are kept, in `.cella/`.
const TAGS_FILE: &str = "tags.json";
/// The largest tags.json read.
const MAX_TAGS: u64 = 1 << 20;

/// What a container's id is the hash of, as cella.lock records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    pub id: String,
    pub epoch: i64,
    /// Each setup step as plain JSON, with the digests of the files and
    /// the ids of the images it reads.
    pub setup: Vec<Value>,
    /// `build-network: user`.
    pub build_network: bool,
}

impl<'a> Versions<'a> {
    /// Inputs are read beneath `project`; file digests are cached between
    /// runs in `state` (the project's `.cella/`), if given.
    pub fn new(config: &'a Config, project: &'a Dir, state: Option<&'a Dir>, epoch: i64) -> Self {
        Versions {
            config,
            project,
            state,
            cache: state.map_or_else(DigestCache::empty, DigestCache::load),
            ids: BTreeMap::new(),
            setups: BTreeMap::new(),
            epoch,
            registry: FetchCtx::default(),
            tags: state
                .and_then(|s| s.read(Path::new(TAGS_FILE), MAX_TAGS).ok())
                .and_then(|b| serde_json::from_slice::<BTreeMap<String, String>>(&b).ok())
                .map(|tags| tags.into_iter().filter(|(_, d)| is_digest(d)).collect())
                .unwrap_or_default(),
            tags_changed: false,
            pull: false,
            resolved: BTreeMap::new(),
        }
    }

    /// Pulls `!Image docker://…` as `registry` says; with `pull`, every
    /// tag is resolved again (a newer image is taken, the ids change).
    pub fn with_registry(mut self, registry: FetchCtx, pull: bool) -> Self {
        self.registry = registry;
        self.pull = pull;
        self
    }

    /// What cella's fetches for the project need.
    pub fn fetch_ctx(&self) -> &FetchCtx {
        &self.registry
    }

    /// Where an image step's blobs come from, with what it was resolved
    /// to when the id was computed (or, for a registry tag, before).
    pub fn image_source<'s>(&'s self, step: &ImageStep) -> oci::Source<'s> {
        let pinned = self
            .resolved
            .get(&step.reference)
            .or_else(|| self.tag_key(step).and_then(|k| self.tags.get(&k)));
        oci::Source {
            project: self.project,
            registry: &self.registry,
            pinned: pinned.map(String::as_str),
        }
    }

    /// `HOST/REPOSITORY:TAG` of a registry image named by its tag.
    fn tag_key(&self, step: &ImageStep) -> Option<String> {
        match (&step.source, &step.digest) {
            (ImageSource::Registry(r), None) => Some(format!(
                "{}/{}:{}",
                r.registry.as_deref().unwrap_or(&self.registry.default),
                r.repository,
                r.tag
            )),
            _ => None,
        }
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// The id of container `name` (which the config defines; its references
    /// were checked for existence and cycles when it was loaded).
    pub fn id(&mut self, name: &str) -> Result<String, VersionError> {
        if let Some(id) = self.ids.get(name) {
            return Ok(id.clone());
        }
        let config = self.config;
        let Some(container) = config.containers.get(name) else {
            return Ok(format!("missing-container-{name}"));
        };
        let mut hasher = Sha256::new();
        frame(&mut hasher, STEPS_VERSION.as_bytes());
        frame(&mut hasher, FORMAT_VERSION.as_bytes());
        frame(&mut hasher, self.epoch.to_string().as_bytes());
        let mut setup = Vec::with_capacity(container.setup.len());
        for (i, step) in container.setup.iter().enumerate() {
            let value = self.normalised(container, i, &step.step)?;
            frame(&mut hasher, value.to_string().as_bytes());
            setup.push(value);
        }
        // Only when set, so that the ids of images built before it existed stay.
        if container.build_network == Network::User {
            frame(&mut hasher, b"build-network: user");
        }
        let id = hex::encode(hasher.finalize());
        self.ids.insert(name.to_owned(), id.clone());
        self.setups.insert(name.to_owned(), setup);
        Ok(id)
    }

    /// What the id of container `name` hashes.
    pub fn inputs(&mut self, name: &str) -> Result<Inputs, VersionError> {
        let id = self.id(name)?;
        Ok(Inputs {
            id,
            epoch: self.epoch,
            setup: self.setups.get(name).cloned().unwrap_or_default(),
            build_network: self
                .config
                .containers
                .get(name)
                .is_some_and(|c| c.build_network == Network::User),
        })
    }

    /// Saves the digest cache; a failure only costs hashing again next time.
    pub fn save_cache(&self) {
        if let Some(state) = self.state {
            let _ = self.cache.save(state);
            if self.tags_changed {
                if let Ok(json) = serde_json::to_vec_pretty(&self.tags) {
                    let _ = super::host::write_replace(state, Path::new(TAGS_FILE), &json);
                }
            }
        }
    }

    /// The project directory inputs are read beneath.
    pub fn project(&self) -> &'a Dir {
        self.project
    }

    /// A step as plain JSON, with its inputs' digests in place of paths' content.
    fn normalised(&mut self, c: &Container, i: usize, step: &Step) -> Result<Value, VersionError> {
        let at = |source: Box<dyn std::error::Error + Send + Sync>| VersionError {
            at: format!(
                "{}:{}: containers.{}.setup[{i}]",
                self.config.file_of(&c.file, c.setup[i].pos).display(),
                c.setup[i].pos,
                c.name
            ),
            source,
        };
        Ok(match step {
            Step::Tar {
                url,
                rel,
                path,
                sha256,
                subdir,
            } => {
                let content = match (sha256, rel) {
                    (Some(sum), _) => sum.clone(),
                    (None, Some(rel)) => host::file_digest_hex(self.project, rel, &mut self.cache)
                        .map_err(|e| at(e.into()))?,
                    (None, None) => {
                        self.registry
                            .fetcher()
                            .fetch(url, None)
                            .map_err(|e| at(e.into()))?
                            .sha256
                    }
                };
                let mut value = json!({"Tar": {"url": url, "path": path, "content": content}});
                // Only when set, so that the ids of images built before it stay.
                if let Some(subdir) = subdir {
                    value["Tar"]["subdir"] = json!(subdir);
                }
                value
            }
            Step::Download {
                url,
                path,
                mode,
                sha256,
            } => {
                let content = match sha256 {
                    Some(sum) => sum.clone(),
                    None => {
                        self.registry
                            .fetcher()
                            .fetch(url, None)
                            .map_err(|e| at(e.into()))?
                            .sha256
                    }
                };
                json!({"Download": {"url": url, "path": path, "mode": mode, "content": content}})
            }
            // The manifest's digest names everything in the image: the
            // build checks each blob against the digests it leads to.
            Step::Image(image) => {
                let key = self.tag_key(image);
                if self.pull {
                    if let Some(key) = &key {
                        self.tags.remove(key);
                    }
                }
                let resolved =
                    oci::resolve(&self.image_source(image), image).map_err(|e| at(e.into()))?;
                if let Some(key) = key {
                    if self.tags.get(&key) != Some(&resolved.top) {
                        self.tags.insert(key, resolved.top.clone());
                        self.tags_changed = true;
                    }
                }
                self.resolved
                    .insert(image.reference.clone(), resolved.top.clone());
                json!({"Image": {"manifest": resolved.digest}})
            }
            // As vagga: without a revision, the first commit fetched stays
            // until the step changes or the image is rebuilt by hand.
            Step::Git(git) => json!({"Git": {
                "url": git.url, "revision": git.revision, "branch": git.branch, "path": git.path,
            }}),
            Step::Container(name) => json!({"Container": self.id(name)?}),
            Step::Sh(script) => json!({ "Sh": script }),
            Step::Package { tag, script, .. } => {
                json!({ "Package": {"tag": tag, "script": script} })
            }
            Step::Cmd(argv) => json!({ "Cmd": argv }),
            Step::Text(files) => json!({ "Text": files }),
            Step::Copy(copy) => {
                let filter = copy.select.filter().map_err(|e| at(e.into()))?;
                // A source in the image is what the steps before made: no
                // more to hash than the step (as vagga).
                let content = match &copy.rel {
                    Some(rel) => Some(
                        self.tree_digest(rel, &filter, copy.preserve_times)
                            .map_err(|e| at(e.into()))?,
                    ),
                    None => None,
                };
                let select = &copy.select;
                let mut value = json!({"Copy": {
                    "source": copy.source, "path": copy.path,
                    "include": select.include_regex, "exclude": select.exclude_regex,
                    "uid": copy.owner_uid, "gid": copy.owner_gid, "umask": copy.umask,
                    "content": content,
                }});
                if let Some(rules) = &select.rules {
                    value["Copy"]["rules"] = json!(rules);
                }
                if copy.preserve_permissions {
                    value["Copy"]["preserve_permissions"] = json!(true);
                }
                if copy.preserve_times {
                    value["Copy"]["preserve_times"] = json!(true);
                }
                value
            }
            Step::EnsureDir(path) => json!({ "EnsureDir": path }),
            Step::EmptyDir(path) => json!({ "EmptyDir": path }),
            Step::Remove(path) => json!({ "Remove": path }),
            Step::Env(vars) => json!({ "Env": vars }),
            Step::CacheDirs(dirs) => json!({ "CacheDirs": dirs }),
            Step::Depends { path, rel, select } => {
                let filter = select.filter().map_err(|e| at(e.into()))?;
                let content = self
                    .tree_digest(rel, &filter, false)
                    .map_err(|e| at(e.into()))?;
                let mut value = json!({"Depends": {"path": path, "content": content}});
                if *select != Selection::default() {
                    value["Depends"]["include"] = json!(select.include_regex);
                    value["Depends"]["exclude"] = json!(select.exclude_regex);
                    value["Depends"]["rules"] = json!(select.rules);
                }
                value
            }
            Step::Build {
                container,
                source,
                path,
                temporary,
            } => {
                let mut value = json!({"Build": {"image": self.id(container)?, "source": source, "path": path}});
                // Only when set, so that the ids of images built before it stay.
                if *temporary {
                    value["Build"]["temporary"] = json!(true);
                }
                value
            }
            Step::Debian(d) => json!({"Debian": {
                "suite": d.suite, "variant": d.variant,
                "mirror": d.mirror.as_deref().unwrap_or(crate::config::DEFAULT_DEBIAN_MIRROR),
            }}),
            Step::Install(packages) => json!({ "Install": packages }),
        })
    }

    /// The digest of the files under `rel` the filter takes; with
    /// `times`, their mtimes count too (`!Copy`'s `preserve-times`).
    fn tree_digest(
        &mut self,
        rel: &Path,
        filter: &Filter,
        times: bool,
    ) -> Result<String, HostError> {
        let entries = walk(self.project, rel, filter)?;
        let digest = host::tree_digest(self.project, rel, &entries, &mut self.cache)?;
        if !times {
            return Ok(hex::encode(digest));
        }
        let mut hasher = Sha256::new();
        frame(&mut hasher, &digest);
        for entry in &entries {
            frame(&mut hasher, &entry.rel);
            frame(&mut hasher, &entry.mtime_ns.to_le_bytes());
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

/// `sha256:` and 64 lowercase hex digits: what tags.json (a project's
/// file) may pin a tag to.
fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Feeds a length-prefixed field, so no two sequences of fields collide.
fn frame(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// The build epoch: `SOURCE_DATE_EPOCH` (as the environment gave it),
/// else 0. Files that builds create get it as their mtime at the latest.
pub fn epoch(source_date_epoch: Option<&str>) -> Result<i64, String> {
    match source_date_epoch {
        None => Ok(0),
        Some(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds")),
    }
}
