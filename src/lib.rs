//! cella: run each command of a project in its own KVM microVM.

pub mod commands;
pub mod config;
pub mod devices;
pub mod guest;
pub mod hostfs;
pub mod image;
pub mod net;
pub mod snapshot;
pub mod terminal;
pub mod text;
pub mod vmm;
