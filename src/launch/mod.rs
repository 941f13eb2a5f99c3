//! Starting and driving one VM: the layer between the VMM and the user's
//! commands. [`launch`] takes a run spec, the disks and shares it needs
//! and the VM's size, restores a snapshot of a VM of that shape (or boots
//! one and snapshots it), starts passt when the VM has a NIC, sends the
//! spec to guest-init and relays the run until its exit status is in.
//!
//! Nothing here knows about cella.yaml's commands: `commands/` turns those
//! into launches, and image builds reach a launch through the runner that
//! `commands/build.rs` hands them.

pub mod control;
mod error;
pub mod initramfs;
mod machine;
pub mod passt;
pub mod snapshot;
mod start;
pub mod stats;
pub mod terminal;
pub mod warm;

pub use control::{BuildIo, GuestError};
pub use error::{interrupted_by, LaunchError};
pub use machine::{fs_server, LaunchOptions, Machine, DEFAULT_CPUS, DEFAULT_MEMORY};
pub use start::{built_with, kernel_cmdline, launch};
