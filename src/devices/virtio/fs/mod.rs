//! virtio-fs: the FUSE server that shares host directories with the guest.

pub mod device;
mod dirs;
mod files;
pub mod fuse;
mod inodes;
mod names;
mod quota;
pub mod server;
mod sys;
#[cfg(test)]
mod tests;
