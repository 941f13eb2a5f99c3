//! cella: run each command of a project in its own KVM microVM.

pub mod commands;
pub mod config;
pub mod devices;
pub mod hostfs;
pub mod image;
pub mod launch;
pub mod sandbox;
pub mod text;
pub mod vmm;
