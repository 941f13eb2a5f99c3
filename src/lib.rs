//! cella: run each command of a project in its own KVM microVM.

pub mod config;
pub mod image;
