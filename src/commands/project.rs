//! The project a command runs in: its directory and `.cella/` store.

use crate::config::Config;
use crate::hostfs::{Dir, FsError};
use crate::image::store::Store;

/// The project directory and its `.cella/` store, held open for one
/// command: every project and state file is reached beneath them.
pub struct Project {
    pub dir: Dir,
    pub store: Store,
}

impl Project {
    pub fn open(config: &Config) -> Result<Project, FsError> {
        let dir = Dir::open(&config.project_dir)?;
        let store = Store::open(&dir).map_err(|e| e.0)?;
        Ok(Project { dir, store })
    }
}
