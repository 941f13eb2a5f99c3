//! Decoding a container's `setup`: one tagged YAML node per `Step`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::checks::Reference;
use super::decode::{join, Decoder, Fields};
use super::error::{ConfigError, Pos};
use super::model::{DebianStep, ImageSource, ImageStep, InputProblem, SetupStep, Step};
use super::refs;
use super::scalars;
use super::scalars::{quoted, Kind};
use super::yaml::{Node, Value};
use crate::hostfs::{FsError, Kind as HostKind, Shown};

const TAR_FIELDS: &[&str] = &["url", "path", "sha256", "subdir"];
const DOWNLOAD_FIELDS: &[&str] = &["url", "path", "mode", "sha256"];
const TAR_INSTALL_FIELDS: &[&str] = &["url", "sha256", "subdir", "script"];
/// `!TarInstall`'s script when it gives none, as in vagga.
const TAR_INSTALL_SCRIPT: &str = "./configure --prefix=/usr && make && make install";
const IMAGE_FIELDS: &[&str] = &["ref", "digest"];
const BUILD_FIELDS: &[&str] = &["container", "source", "path", "temporary-mount"];
const DEBIAN_FIELDS: &[&str] = &["suite", "variant", "mirror"];

impl Decoder<'_> {
    /// The field `setup` of the container `container`: an untagged list of
    /// steps. The containers the steps name go to `refs`.
    pub(super) fn setup(
        &self,
        node: Option<&Node>,
        path: &str,
        container: &str,
        refs: &mut Vec<Reference>,
    ) -> Result<Vec<SetupStep>, ConfigError> {
        let Some(list) = node else {
            return Ok(Vec::new());
        };
        self.untagged(list, path)?;
        match &list.value {
            Value::Null => Ok(Vec::new()),
            Value::Seq(items) => {
                let mut steps = Vec::with_capacity(items.len());
                let mut languages = super::packages::Languages::default();
                for (i, item) in items.iter().enumerate() {
                    let step_path = format!("{path}[{i}]");
                    if let Some(more) = self.language(item, &step_path, &mut languages)? {
                        steps.extend(more);
                        continue;
                    }
                    match item.tag.as_deref() {
                        Some("TarInstall") => {
                            steps.extend(self.tar_install(item, &step_path, i)?);
                            continue;
                        }
                        Some("GitInstall") => {
                            steps.extend(self.git_install(item, &step_path, i)?);
                            continue;
                        }
                        _ => {}
                    }
                    steps.push(self.step(item, &step_path, i, container, refs)?);
                }
                Ok(steps)
            }
            _ => Err(self.wrong_type(list, path, "a list")),
        }
    }

    fn step(
        &self,
        node: &Node,
        path: &str,
        index: usize,
        container: &str,
        refs: &mut Vec<Reference>,
    ) -> Result<SetupStep, ConfigError> {
        if let Some(tag) = node.tag.as_deref() {
            if let Some(advice) = vagga_advice(tag) {
                return Err(self.invalid(
                    node.pos,
                    path,
                    format!("!{tag} is a vagga step cella does not have: {advice}"),
                ));
            }
        }
        let step = match self.variant(node, path, Step::TAGS)? {
            "Tar" => self.tar(node, path)?,
            "Download" => self.download(node, path)?,
            "Git" => self.git(node, path)?,
            "Image" => {
                if index != 0 {
                    return Err(self.invalid(
                        node.pos,
                        path,
                        "!Image must be the first step".to_owned(),
                    ));
                }
                Step::Image(self.image(node, path)?)
            }
            "Container" => {
                if index != 0 {
                    return Err(self.invalid(
                        node.pos,
                        path,
                        "!Container must be the first step".to_owned(),
                    ));
                }
                let name = self.tagged_string(node, path)?;
                refs.push(Reference {
                    from: container.to_owned(),
                    to: name.clone(),
                    at: self.at(node.pos, path),
                    step: Some(self.at(node.pos, path)),
                });
                Step::Container(name)
            }
            "Sh" => {
                let script = match &node.value {
                    Value::Null => String::new(),
                    _ => self.tagged_string(node, path)?,
                };
                if script.trim().is_empty() {
                    return Err(ConfigError::EmptyRun {
                        at: self.at(node.pos, path),
                    });
                }
                Step::Sh(script)
            }
            "Cmd" => Step::Cmd(self.argv(node, path)?),
            "Text" => Step::Text(self.text(node, path)?),
            "Copy" => Step::Copy(self.copy(node, path)?),
            "EnsureDir" => Step::EnsureDir(self.tagged_container_path(node, path)?),
            "EmptyDir" => Step::EmptyDir(self.tagged_container_path(node, path)?),
            "Remove" => Step::Remove(self.tagged_container_path(node, path)?),
            "Env" => Step::Env(self.variables(node, path)?),
            "CacheDirs" => Step::CacheDirs(self.cache_dirs(node, path)?),
            "Depends" => self.depends(node, path)?,
            "Build" => self.build(node, path, container, refs)?,
            "Debian" => {
                if index != 0 {
                    return Err(self.invalid(
                        node.pos,
                        path,
                        "!Debian must be the first step".to_owned(),
                    ));
                }
                Step::Debian(self.debian(node, path)?)
            }
            "Install" => Step::Install(self.packages(node, path)?),
            tag => {
                return Err(ConfigError::UnknownTag {
                    at: self.at(node.pos, path),
                    tag: tag.to_owned(),
                    expected: super::decode::tag_list(Step::TAGS),
                });
            }
        };
        Ok(SetupStep {
            step,
            pos: node.pos,
        })
    }

    fn tar(&self, node: &Node, path: &str) -> Result<Step, ConfigError> {
        let fields = self.fields(node, path, TAR_FIELDS)?;
        let (url, rel, sha256) = self.archive(&fields)?;
        Ok(Step::Tar {
            url,
            rel,
            path: self
                .optional(&fields, "path", scalars::container_path)?
                .unwrap_or_else(|| "/".to_owned()),
            sha256,
            subdir: self
                .optional(&fields, "subdir", refs::archive_dir)?
                .flatten(),
        })
    }

    /// The `url` and `sha256` of `!Tar` or `!TarInstall`: the URL as
    /// written, the project file it names (none for an http(s) URL), and
    /// the sha256.
    fn archive(
        &self,
        fields: &Fields<'_>,
    ) -> Result<(String, Option<PathBuf>, Option<String>), ConfigError> {
        let url_node = self.required(fields, "url")?;
        let url_path = fields.path_of("url");
        let url = self.string(url_node, &url_path)?;
        let sha256 = self.optional(fields, "sha256", scalars::sha256)?;
        let rel = match self.url_or_file(url_node, &url_path, &url, sha256.is_some())? {
            Some(rel) => {
                self.exists(url_node.pos, &url_path, &rel, Kind::File)?;
                Some(rel)
            }
            None => None,
        };
        Ok((url, rel, sha256))
    }

    /// vagga's `!TarInstall {url, sha256?, subdir?, script?}`, as the
    /// three steps it stands for: the archive unpacked (`!Tar`) into a
    /// directory of its own at the root (a build VM's /tmp is a tmpfs,
    /// which would hide it), its install script run there (`!Sh`, in
    /// `subdir`, else in the archive's only top directory if it has just
    /// one, else at its root; default `./configure --prefix=/usr && make
    /// && make install`), and the directory removed.
    fn tar_install(
        &self,
        node: &Node,
        path: &str,
        index: usize,
    ) -> Result<Vec<SetupStep>, ConfigError> {
        let fields = self.fields(node, path, TAR_INSTALL_FIELDS)?;
        let (url, rel, sha256) = self.archive(&fields)?;
        let subdir = self.optional(&fields, "subdir", refs::archive_dir)?;
        let script = match fields.get("script") {
            Some(script) if script.value != Value::Null => {
                self.install_script(script, &fields.path_of("script"))?
            }
            _ => TAR_INSTALL_SCRIPT.to_owned(),
        };
        let dir = format!("/.cella-tarinstall-{index}");
        let enter = match subdir {
            Some(Some(sub)) => format!("cd {}\n", quoted(&format!("{dir}/{sub}"))),
            Some(None) => format!("cd {dir}\n"),
            // The only entry, if it is a directory (vagga's rule).
            None => format!(
                "d={dir}; n=0\nfor e in \"$d\"/* \"$d\"/.[!.]* \"$d\"/..?*; do \
                 if [ -e \"$e\" ] || [ -L \"$e\" ]; then n=$((n+1)); f=$e; fi; done\n\
                 if [ \"$n\" = 1 ] && [ -d \"$f\" ] && [ ! -L \"$f\" ]; then d=$f; fi\ncd \"$d\"\n"
            ),
        };
        let at = |step| SetupStep {
            step,
            pos: node.pos,
        };
        Ok(vec![
            at(Step::Tar {
                url,
                rel,
                path: dir.clone(),
                sha256,
                subdir: None,
            }),
            at(Step::Sh(format!("{enter}{script}"))),
            at(Step::Remove(dir)),
        ])
    }

    /// The `script` of `!TarInstall` or `!GitInstall`: a string with
    /// something to run.
    pub(super) fn install_script(&self, node: &Node, path: &str) -> Result<String, ConfigError> {
        let text = self.string(node, path)?;
        if text.trim().is_empty() {
            return Err(ConfigError::EmptyRun {
                at: self.at(node.pos, path),
            });
        }
        Ok(text)
    }

    /// `!Download {url, path, mode?, sha256?}`.
    fn download(&self, node: &Node, path: &str) -> Result<Step, ConfigError> {
        let fields = self.fields(node, path, DOWNLOAD_FIELDS)?;
        let url_node = self.required(&fields, "url")?;
        let url_path = fields.path_of("url");
        let url = self.string(url_node, &url_path)?;
        let sha256 = self.optional(&fields, "sha256", scalars::sha256)?;
        if self
            .url_or_file(url_node, &url_path, &url, sha256.is_some())?
            .is_some()
        {
            return Err(self.invalid(
                url_node.pos,
                &url_path,
                format!("expected an http:// or https:// URL, found {url:?} (a project file goes in with !Copy)"),
            ));
        }
        let dest = self.required(&fields, "path")?;
        let dest_path = fields.path_of("path");
        let file = self.parsed(dest, &dest_path, scalars::container_path)?;
        if file == "/" {
            return Err(self.invalid(
                dest.pos,
                &dest_path,
                "expected the path of a file, found \"/\"".to_owned(),
            ));
        }
        Ok(Step::Download {
            url,
            path: file,
            mode: self
                .optional(&fields, "mode", scalars::mode)?
                .unwrap_or(0o644),
            sha256,
        })
    }

    /// A `url` of `!Tar` or `!Download`: an http(s) URL (`None`; plain
    /// http only with a `sha256`, which pins what may come), or a
    /// project file (its path relative to the project).
    fn url_or_file(
        &self,
        node: &Node,
        path: &str,
        url: &str,
        pinned: bool,
    ) -> Result<Option<PathBuf>, ConfigError> {
        let invalid = |message| self.invalid(node.pos, path, message);
        if url.is_empty() {
            return Err(invalid("must not be empty".to_owned()));
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            crate::config::netpolicy::HttpUrl::parse(url).map_err(invalid)?;
            if url.starts_with("http://") && !pinned {
                return Err(invalid(format!(
                    "{url:?} is plain http: give its `sha256`, or use https"
                )));
            }
            return Ok(None);
        }
        if url.contains("://") {
            return Err(invalid(format!(
                "only http(s) URLs and project paths are supported, not {url:?}"
            )));
        }
        // Inside the project, as every host path cella.yaml names: an
        // untrusted project must not pull other host files into an image.
        self.project_path(node.pos, path, url).map(Some)
    }

    /// `!Image REF` or `!Image {ref, digest?}`.
    fn image(&self, node: &Node, path: &str) -> Result<ImageStep, ConfigError> {
        let (ref_node, ref_path, digest, reference) = match &node.value {
            Value::Scalar { .. } => (node, path.to_owned(), None, self.tagged_string(node, path)?),
            _ => {
                let fields = self.fields(node, path, IMAGE_FIELDS)?;
                let digest = self.optional(&fields, "digest", refs::oci_digest)?;
                let (ref_node, ref_path) = (self.required(&fields, "ref")?, fields.path_of("ref"));
                let reference = self.string(ref_node, &ref_path)?;
                (ref_node, ref_path, digest, reference)
            }
        };
        let invalid = |message| self.invalid(ref_node.pos, &ref_path, message);
        if reference.chars().any(char::is_control) {
            return Err(invalid(format!(
                "expected an image reference, found {reference:?}"
            )));
        }
        let (transport, rest) = reference.split_once(':').unwrap_or(("", &reference));
        if transport == "docker" {
            let Some(rest) = rest.strip_prefix("//") else {
                return Err(invalid(format!(
                    "expected docker://[HOST[:PORT]/]NAME[:TAG][@DIGEST], found \"{reference}\""
                )));
            };
            let (registry, pinned) = refs::registry_ref(rest).map_err(invalid)?;
            if let (Some(pinned), Some(digest)) = (&pinned, &digest) {
                if pinned != digest {
                    return Err(invalid(format!(
                        "\"{reference}\" names {pinned}, `digest` {digest}"
                    )));
                }
            }
            return Ok(ImageStep {
                reference,
                source: ImageSource::Registry(registry),
                digest: digest.or(pinned),
            });
        }
        // skopeo's spellings: the path ends at the first ':', a tag may follow.
        let (file, tag) = match rest.split_once(':') {
            Some((file, tag)) => (file, Some(tag)),
            None => (rest, None),
        };
        let tag = tag
            .map(|t| refs::image_tag(t).map_err(invalid))
            .transpose()?;
        let project_file = |kind| -> Result<PathBuf, ConfigError> {
            if file.is_empty() {
                return Err(invalid(format!("\"{reference}\" names no path")));
            }
            let rel = self.project_path(ref_node.pos, &ref_path, file)?;
            self.exists(ref_node.pos, &ref_path, &rel, kind)?;
            Ok(rel)
        };
        let source = match transport {
            "oci" => ImageSource::Layout {
                rel: project_file(Kind::FileOrDirectory)?,
                tag,
            },
            "oci-archive" => ImageSource::OciArchive {
                rel: project_file(Kind::File)?,
                tag,
            },
            "docker-archive" if tag.is_none() => ImageSource::DockerArchive {
                rel: project_file(Kind::File)?,
            },
            "docker-archive" => {
                return Err(invalid(format!(
                    "\"{reference}\": a docker-archive is read whole, without a tag"
                )))
            }
            _ => {
                return Err(invalid(format!(
                    "expected oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE \
                     or docker://[HOST[:PORT]/]NAME[:TAG][@DIGEST], found \"{reference}\""
                )))
            }
        };
        Ok(ImageStep {
            reference,
            source,
            digest,
        })
    }

    /// The argv of `!Cmd`: a list of strings, not empty.
    fn argv(&self, node: &Node, path: &str) -> Result<Vec<String>, ConfigError> {
        match &node.value {
            Value::Seq(items) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.string(item, &format!("{path}[{i}]")))
                .collect(),
            Value::Seq(_) | Value::Null => Err(ConfigError::EmptyRun {
                at: self.at(node.pos, path),
            }),
            _ => Err(self.wrong_type(node, path, "a list")),
        }
    }

    /// The body of `!Debian`.
    fn debian(&self, node: &Node, path: &str) -> Result<DebianStep, ConfigError> {
        let fields = self.fields(node, path, DEBIAN_FIELDS)?;
        let suite_node = self.required(&fields, "suite")?;
        Ok(DebianStep {
            suite: self.parsed(suite_node, &fields.path_of("suite"), scalars::suite)?,
            variant: self
                .optional(&fields, "variant", scalars::variant)?
                .unwrap_or_else(|| "minbase".to_owned()),
            mirror: self.optional(&fields, "mirror", scalars::mirror)?,
        })
    }

    /// The packages of `!Install`: a non-empty list.
    fn packages(&self, node: &Node, path: &str) -> Result<Vec<String>, ConfigError> {
        match &node.value {
            Value::Seq(items) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.parsed(item, &format!("{path}[{i}]"), scalars::package))
                .collect(),
            Value::Seq(_) | Value::Null => Err(self.invalid(
                node.pos,
                path,
                "expected a list of packages, found an empty one".to_owned(),
            )),
            _ => Err(self.wrong_type(node, path, "a list of packages")),
        }
    }

    /// The files of `!Text`: absolute path → content.
    fn text(&self, node: &Node, path: &str) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut files = BTreeMap::new();
        for entry in self.entries(node, path)? {
            let file_path = join(path, &entry.key);
            let name = scalars::container_path(&entry.key)
                .map_err(|message| self.invalid(entry.key_pos, &file_path, message))?;
            if name == "/" {
                return Err(self.invalid(
                    entry.key_pos,
                    &file_path,
                    "expected the path of a file, found \"/\"".to_owned(),
                ));
            }
            let content = self.string(entry.value, &file_path)?;
            if files.insert(name, content).is_some() {
                return Err(ConfigError::DuplicateKey {
                    at: self.at(entry.key_pos, &file_path),
                });
            }
        }
        Ok(files)
    }

    fn build(
        &self,
        node: &Node,
        path: &str,
        container: &str,
        refs: &mut Vec<Reference>,
    ) -> Result<Step, ConfigError> {
        let fields = self.fields(node, path, BUILD_FIELDS)?;
        let name_node = self.required(&fields, "container")?;
        let name_path = fields.path_of("container");
        let name = self.string(name_node, &name_path)?;
        let source = self
            .optional(&fields, "source", scalars::container_path)?
            .unwrap_or_else(|| "/".to_owned());
        let dest = self.optional(&fields, "path", scalars::container_path)?;
        let mount = self.optional(&fields, "temporary-mount", scalars::container_path)?;
        if let (Some(_), Some(node)) = (&dest, fields.get("temporary-mount")) {
            return Err(self.invalid(
                node.pos,
                &fields.path_of("temporary-mount"),
                "give `path` or `temporary-mount`, not both".to_owned(),
            ));
        }
        if mount.as_deref() == Some("/") {
            return Err(self.invalid(
                node.pos,
                &fields.path_of("temporary-mount"),
                "a temporary mount over the root would take the whole image away".to_owned(),
            ));
        }
        refs.push(Reference {
            from: container.to_owned(),
            to: name.clone(),
            at: self.at(name_node.pos, &name_path),
            step: Some(self.at(node.pos, path)),
        });
        Ok(Step::Build {
            container: name,
            temporary: mount.is_some(),
            path: mount.or(dest).unwrap_or_else(|| source.clone()),
            source,
        })
    }

    /// A path of the project (see `scalars::project_path`), relative to the
    /// project directory.
    pub(super) fn project_path(
        &self,
        pos: Pos,
        path: &str,
        text: &str,
    ) -> Result<PathBuf, ConfigError> {
        scalars::project_path(text).map_err(|message| self.invalid(pos, path, message))
    }

    /// Notes, for the container's build, whether the project file `rel`
    /// exists and is of the `kind` wanted ([`Decoder::check_exists`]): a
    /// missing input fails the container's build, not the loading of
    /// cella.yaml.
    pub(super) fn exists(
        &self,
        pos: Pos,
        path: &str,
        rel: &Path,
        kind: Kind,
    ) -> Result<(), ConfigError> {
        let problem = match self.check_exists(pos, path, rel, kind) {
            Ok(()) => return Ok(()),
            Err(ConfigError::MissingFile { at, path }) => InputProblem::Missing { at, path },
            Err(ConfigError::NotAFile { at, path }) => InputProblem::NotAFile { at, path },
            Err(ConfigError::Invalid { at, message }) => InputProblem::Invalid { at, message },
            Err(other) => return Err(other),
        };
        let mut first = self.deferred.borrow_mut();
        if first.is_none() {
            *first = Some(problem);
        }
        Ok(())
    }

    /// Checks that the project file `rel` exists and is of the `kind`
    /// wanted, reached beneath the project directory without following a
    /// symlink (a link, anywhere on the way, is refused by name).
    fn check_exists(
        &self,
        pos: Pos,
        path: &str,
        rel: &Path,
        kind: Kind,
    ) -> Result<(), ConfigError> {
        let at = || self.at(pos, path);
        let shown = || self.project_dir.join(rel);
        let project = self.project.as_ref().map_err(|e| {
            self.invalid(pos, path, format!("cannot open the project directory: {e}"))
        })?;
        match project.lstat(rel) {
            Ok(Some(meta)) if meta.kind == HostKind::File => Ok(()),
            Ok(Some(meta)) if meta.kind == HostKind::Dir && kind == Kind::FileOrDirectory => Ok(()),
            Ok(Some(meta)) if meta.kind == HostKind::Symlink => {
                Err(self.invalid(pos, path, FsError::Symlink(shown()).to_string()))
            }
            Ok(Some(_)) if kind == Kind::File => Err(ConfigError::NotAFile {
                at: at(),
                path: shown(),
            }),
            Ok(Some(meta)) => Err(self.invalid(
                pos,
                path,
                format!(
                    "{} is a {}, not a regular file or directory",
                    Shown(&shown()),
                    meta.kind.name()
                ),
            )),
            Ok(None) => Err(ConfigError::MissingFile {
                at: at(),
                path: shown(),
            }),
            Err(e) => Err(self.invalid(pos, path, e.to_string())),
        }
    }
}

/// The most cache directories one `!CacheDirs` maps.
const MAX_CACHE_DIRS: usize = 16;

impl Decoder<'_> {
    /// `!CacheDirs`: absolute guest paths (normalised) to cache names.
    fn cache_dirs(&self, node: &Node, path: &str) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut dirs = BTreeMap::new();
        for entry in self.entries(node, path)? {
            let dir_path = join(path, &entry.key);
            let guest = scalars::container_path(&entry.key)
                .map_err(|message| self.invalid(entry.key_pos, &dir_path, message))?;
            if guest == "/" || guest == "/work" || guest.starts_with("/work/") {
                return Err(self.invalid(
                    entry.key_pos,
                    &dir_path,
                    "a cache directory goes outside / itself and /work (the project)".into(),
                ));
            }
            let name = self.string(entry.value, &dir_path)?;
            scalars::volume_name(&name)
                .map_err(|message| self.invalid(entry.value.pos, &dir_path, message))?;
            dirs.insert(guest, name);
            if dirs.len() > MAX_CACHE_DIRS {
                return Err(self.invalid(
                    entry.key_pos,
                    &dir_path,
                    format!("at most {MAX_CACHE_DIRS} cache directories"),
                ));
            }
        }
        Ok(dirs)
    }
}

/// What to write instead of a vagga step cella does not have.
fn vagga_advice(tag: &str) -> Option<&'static str> {
    const PACKAGES: &str = "run the package manager in a `!Sh` step with `build-network: user` \
        (with `!Depends` on its requirements file, so that the file joins the image id)";
    Some(match tag {
        "Alpine" | "AlpineRepo" => {
            "start from `!Image docker://alpine:3.20` (its apk runs in `!Sh` steps with \
             `build-network: user`)"
        }
        "Ubuntu" | "UbuntuRelease" => {
            "start from `!Image docker://ubuntu:24.04`, or from `!Debian { suite: bookworm }`"
        }
        "UbuntuRepo" | "UbuntuPPA" | "UbuntuUniverse" | "AptTrust" => {
            "add the repository in a `!Sh` step (with `build-network: user`), then `!Install`"
        }
        "SubConfig" => "copy the other config's container into this cella.yaml",
        "BuildDeps" => "`!Install` the packages, and remove them in a `!Sh` step at the end",
        "RunAs" => "a `!Sh` step that runs `su` or `setpriv` for the user",
        "Unzip" => "`!Download` the archive, then `!Sh unzip` it in a container that has unzip",
        "Py2Install" | "Py2Requirements" => {
            "Debian 12 has no Python 2: use `!Py3Install` or `!Py3Requirements`"
        }
        "YarnDependencies" | "ComposerInstall" | "ComposerDependencies" | "ComposerConfig" => {
            PACKAGES
        }
        _ => return None,
    })
}
