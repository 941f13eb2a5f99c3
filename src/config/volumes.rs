//! Decoding `volumes:` of containers and commands: guest path → tagged `Volume`.

use std::collections::BTreeMap;

use super::checks::Reference;
use super::decode::{join, tag_list, Decoder};
use super::error::ConfigError;
use super::model::{Bind, HostDir, NameRef, Volume};
use super::scalars;
use super::yaml::{Node, Value};

const TMPFS_FIELDS: &[&str] = &["size", "mode", "subdirs", "files"];
const SUBDIR_FIELDS: &[&str] = &["mode"];
const PERSISTENT_FIELDS: &[&str] = &["name", "init-command"];
const SNAPSHOT_FIELDS: &[&str] = &["size", "owner-uid", "owner-gid", "container"];

impl Decoder<'_> {
    /// The field `volumes` of the container or command `owner`: an
    /// untagged mapping of absolute guest paths (normalised) to volumes.
    /// The containers the volumes name go to `refs`.
    pub(super) fn volumes(
        &self,
        node: Option<&Node>,
        path: &str,
        owner: &str,
        refs: &mut Vec<Reference>,
    ) -> Result<BTreeMap<String, Volume>, ConfigError> {
        let mut volumes = BTreeMap::new();
        let Some(node) = node else {
            return Ok(volumes);
        };
        self.untagged(node, path)?;
        for entry in self.entries(node, path)? {
            let volume_path = join(path, &entry.key);
            let guest = scalars::container_path(&entry.key)
                .map_err(|message| self.invalid(entry.key_pos, &volume_path, message))?;
            let volume = self.volume(entry.value, &volume_path, owner, refs)?;
            if volumes.insert(guest, volume).is_some() {
                return Err(ConfigError::DuplicateKey {
                    at: self.at(entry.key_pos, &volume_path),
                });
            }
        }
        Ok(volumes)
    }

    fn volume(
        &self,
        node: &Node,
        path: &str,
        owner: &str,
        refs: &mut Vec<Reference>,
    ) -> Result<Volume, ConfigError> {
        Ok(match self.variant(node, path, Volume::TAGS)? {
            "Tmpfs" => self.tmpfs(node, path)?,
            "BindRW" => Volume::BindRW(self.bind(node, path)?),
            "BindRO" => Volume::BindRO(self.bind(node, path)?),
            "Empty" => match node.value {
                Value::Null => Volume::Empty,
                _ => return Err(self.wrong_type(node, path, "nothing")),
            },
            "Persistent" => self.persistent(node, path)?,
            "CacheDir" => {
                let name = self.tagged_string(node, path)?;
                scalars::volume_name(&name)
                    .map_err(|message| self.invalid(node.pos, path, message))?;
                Volume::CacheDir(name)
            }
            "Container" => {
                let name = self.tagged_string(node, path)?;
                refs.push(Reference {
                    from: owner.to_owned(),
                    to: name.clone(),
                    at: self.at(node.pos, path),
                    step: None,
                });
                Volume::Container(name)
            }
            "Snapshot" => {
                let fields = self.fields(node, path, SNAPSHOT_FIELDS)?;
                let container = match fields.get("container") {
                    Some(name_node) if name_node.value != Value::Null => {
                        let name_path = fields.path_of("container");
                        let name = self.string(name_node, &name_path)?;
                        refs.push(Reference {
                            from: owner.to_owned(),
                            to: name.clone(),
                            at: self.at(name_node.pos, &name_path),
                            step: None,
                        });
                        Some(name)
                    }
                    _ => None,
                };
                Volume::Snapshot {
                    size: self.optional(&fields, "size", scalars::size)?,
                    owner_uid: self.optional(&fields, "owner-uid", scalars::uint32)?,
                    owner_gid: self.optional(&fields, "owner-gid", scalars::uint32)?,
                    container,
                }
            }
            tag => {
                return Err(ConfigError::UnknownTag {
                    at: self.at(node.pos, path),
                    tag: tag.to_owned(),
                    expected: tag_list(Volume::TAGS),
                })
            }
        })
    }

    fn tmpfs(&self, node: &Node, path: &str) -> Result<Volume, ConfigError> {
        let fields = self.fields(node, path, TMPFS_FIELDS)?;
        let mut subdirs = BTreeMap::new();
        if let Some(node) = fields.get("subdirs") {
            let subdirs_path = fields.path_of("subdirs");
            self.untagged(node, &subdirs_path)?;
            for entry in self.entries(node, &subdirs_path)? {
                let dir_path = join(&subdirs_path, &entry.key);
                self.relative_name(&entry.key, entry.key_pos, &dir_path)?;
                self.untagged(entry.value, &dir_path)?;
                let dir = self.fields(entry.value, &dir_path, SUBDIR_FIELDS)?;
                subdirs.insert(entry.key, self.optional(&dir, "mode", scalars::mode)?);
            }
        }
        let mut files = BTreeMap::new();
        if let Some(node) = fields.get("files") {
            let files_path = fields.path_of("files");
            self.untagged(node, &files_path)?;
            for entry in self.entries(node, &files_path)? {
                let file_path = join(&files_path, &entry.key);
                self.relative_name(&entry.key, entry.key_pos, &file_path)?;
                let content = self
                    .optional_string(Some(entry.value), &file_path)?
                    .unwrap_or_default();
                files.insert(entry.key, content);
            }
        }
        Ok(Volume::Tmpfs {
            size: self.optional(&fields, "size", scalars::size)?,
            mode: self.optional(&fields, "mode", scalars::mode)?,
            subdirs,
            files,
        })
    }

    /// `!Persistent NAME` or `!Persistent {name, init-command?}`.
    fn persistent(&self, node: &Node, path: &str) -> Result<Volume, ConfigError> {
        if let Value::Scalar { text, .. } = &node.value {
            scalars::volume_name(text).map_err(|message| self.invalid(node.pos, path, message))?;
            return Ok(Volume::Persistent {
                name: text.clone(),
                init_command: None,
            });
        }
        if let Value::Seq(_) = node.value {
            return Err(self.wrong_type(node, path, "a name or a mapping"));
        }
        let fields = self.fields(node, path, PERSISTENT_FIELDS)?;
        let name_node = self.required(&fields, "name")?;
        Ok(Volume::Persistent {
            name: self.parsed(name_node, &fields.path_of("name"), |text| {
                scalars::volume_name(text).map(|()| text.to_owned())
            })?,
            init_command: match fields.get("init-command") {
                Some(node) if node.value != Value::Null => {
                    let path = fields.path_of("init-command");
                    Some(NameRef {
                        name: self.string(node, &path)?,
                        at: self.at(node.pos, &path),
                    })
                }
                _ => None,
            },
        })
    }

    /// The host directory of `!BindRW`/`!BindRO`: in the project
    /// (relative or under `/work`), or any other absolute path.
    fn bind(&self, node: &Node, path: &str) -> Result<Bind, ConfigError> {
        let text = self.tagged_string(node, path)?;
        let outside = text.starts_with('/') && !scalars::is_under_work(&text);
        let host = if outside {
            HostDir::Absolute(
                scalars::host_path(&text)
                    .map_err(|message| self.invalid(node.pos, path, message))?,
            )
        } else {
            HostDir::Project(
                scalars::project_path(&text)
                    .map_err(|message| self.invalid(node.pos, path, message))?,
            )
        };
        Ok(Bind {
            path: text,
            host,
            at: self.at(node.pos, path),
        })
    }

    fn relative_name(
        &self,
        name: &str,
        pos: super::error::Pos,
        path: &str,
    ) -> Result<(), ConfigError> {
        scalars::relative_name(name).map_err(|message| self.invalid(pos, path, message))
    }
}
