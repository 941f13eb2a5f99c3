//! The command line: `cella [OPTIONS] [COMMAND [ARGS...]]` and the `_` builtins.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cella",
    version,
    about = "Run each command of a project in its own KVM microVM",
    after_help = "Without a command, lists the commands of cella.yaml."
)]
pub struct Cli {
    /// Show the guest kernel's log on stderr.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Boot the guest kernel from scratch instead of restoring a snapshot
    /// (also CELLA_COLD_BOOT=1).
    #[arg(long, global = true)]
    pub cold_boot: bool,
    /// Never build: run in the image last built for the container, even
    /// if its setup changed since; fail if it was never built.
    #[arg(long, global = true)]
    pub no_build: bool,
    /// Let `!BindRW`/`!BindRO` volumes bind this host directory (or one
    /// under it) from outside the project; repeatable. The settings file's
    /// `allow-host-paths` adds to these.
    #[arg(long, global = true, value_name = "DIR")]
    pub allow_host_path: Vec<std::path::PathBuf>,
    /// Set an environment variable in the guest, over cella.yaml's; repeatable.
    #[arg(short = 'E', long = "environ", global = true, value_name = "NAME=VALUE", value_parser = name_value)]
    pub environ: Vec<(String, String)>,
    /// Pass this variable of cella's own environment to the guest; repeatable.
    #[arg(short = 'e', long = "use-env", global = true, value_name = "NAME")]
    pub use_env: Vec<String>,
    /// Stop the VM after this many seconds of the command's run and exit 124.
    #[arg(long, global = true, value_name = "SECONDS", value_parser = seconds)]
    pub timeout: Option<std::time::Duration>,
    /// vCPUs of the VM, over the command's `cpus` (default 1).
    #[arg(long, global = true, value_name = "N", value_parser = cella::config::parse_cpus)]
    pub cpus: Option<u32>,
    /// Memory of the VM, like 512Mi or 1G, over the command's `memory` (default 256Mi).
    #[arg(long, global = true, value_name = "SIZE", value_parser = cella::config::parse_memory)]
    pub memory: Option<u64>,
    /// `user` or `none`, over the command's `network` (default none: only loopback).
    #[arg(long, global = true, value_name = "MODE", value_parser = cella::config::parse_network)]
    pub network: Option<cella::config::Network>,
    /// Let guests with `network: user` (and cella's fetches for the project)
    /// reach this loopback, private or link-local address or network, like
    /// 127.0.0.1 or 10.1.0.0/16; repeatable. The settings file's
    /// `network.allow-addresses` adds to these.
    #[arg(long, global = true, value_name = "CIDR", value_parser = cella::config::settings::parse_net)]
    pub allow_address: Vec<ipnet::Ipv4Net>,
    /// Publish the command's `ports` on this host address instead of 127.0.0.1.
    #[arg(long, global = true, value_name = "IPV4")]
    pub publish_address: Option<std::net::Ipv4Addr>,
    /// Run the command without its `prerequisites`.
    #[arg(long, global = true)]
    pub no_prerequisites: bool,
    /// Run several commands of cella.yaml, in order, without arguments:
    /// `cella -m CMD1 CMD2…` (vagga's -m); the first that fails stops the
    /// rest, and its status is cella's.
    #[arg(short = 'm', long = "run-multiple")]
    pub run_multiple: bool,
    #[command(subcommand)]
    pub command: Option<Sub>,
}

fn name_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() && !name.contains('\0') => {
            Ok((name.to_string(), value.to_string()))
        }
        _ => Err(format!("expected NAME=VALUE, found {text:?}")),
    }
}

fn seconds(text: &str) -> Result<std::time::Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map(std::time::Duration::from_secs_f64)
        .ok_or_else(|| format!("expected a positive number of seconds, found {text:?}"))
}

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Run any program in a container: `cella _run CONTAINER [PROG [ARGS...]]`.
    #[command(name = "_run")]
    Run {
        container: String,
        /// Make the root writable; the writes vanish with the VM
        /// (`write-mode: transient-overlay`).
        #[arg(short = 'W', long)]
        writable: bool,
        /// The program and its arguments; none: the Entrypoint and Cmd of
        /// the image an `!Image` step brought, as `podman run IMAGE`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        argv: Vec<String>,
    },
    /// Export a container's image (built first if needed): its root as a
    /// tarball, as vagga does, or an OCI or docker archive for podman.
    #[command(name = "_pack_image")]
    PackImage {
        container: String,
        /// Write to FILE instead of stdout.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<std::path::PathBuf>,
        /// Compress the tarball with gzip.
        #[arg(short = 'z', long = "gzip", group = "compress")]
        gzip: bool,
        /// Compress the tarball with bzip2.
        #[arg(short = 'j', long = "bzip2", group = "compress")]
        bzip2: bool,
        /// Compress the tarball with xz.
        #[arg(short = 'J', long = "xz", group = "compress")]
        xz: bool,
        /// tar (the root), oci-archive or docker-archive.
        #[arg(long, default_value = "tar", value_parser = ["tar", "oci-archive", "docker-archive"])]
        format: String,
        /// The image's name in an archive (default localhost/CONTAINER:latest).
        #[arg(long, value_name = "NAME:TAG")]
        tag: Option<String>,
    },
    /// Push a container's image (built first if needed) to a registry:
    /// `cella _push_image CONTAINER docker://HOST[:PORT]/NAME:TAG`.
    #[command(name = "_push_image")]
    PushImage {
        container: String,
        /// Where to: docker://[HOST[:PORT]/]NAME[:TAG].
        destination: String,
    },
    /// List the containers and commands of cella.yaml.
    #[command(name = "_list")]
    List,
    /// Build a container's image, or reuse it if its setup is unchanged.
    #[command(name = "_build")]
    Build {
        container: String,
        /// Rebuild even if an image for this setup exists.
        #[arg(long, conflicts_with = "locked")]
        force: bool,
        /// Check the build against cella.lock instead of updating it: fail,
        /// naming the difference, when an input, the kernel or guest-init,
        /// or the image's bytes differ from what the lock records.
        #[arg(long)]
        locked: bool,
        /// Print the image's sha256 on stdout.
        #[arg(long)]
        print_digest: bool,
        /// Ask the registries again what the tags of `!Image docker://…`
        /// name (else the digest a tag was first resolved to stays), and
        /// rebuild what changed.
        #[arg(long, conflicts_with = "locked")]
        pull: bool,
    },
    /// Rebuild from scratch, in a store of its own, the container (every
    /// container of cella.lock without one) and what it builds on, and
    /// compare the bytes with cella.lock and with the project's images.
    #[command(name = "_verify")]
    Verify { container: Option<String> },
    /// Print the image id of a container's current setup (builds nothing).
    #[command(name = "_version_hash")]
    VersionHash { container: String },
    /// Remove images from .cella/images.
    #[command(name = "_clean")]
    Clean {
        /// Remove the images the current cella.yaml does not use.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        unused: bool,
        /// Remove every image.
        #[arg(long)]
        all: bool,
    },
    /// Show what the user's cache holds (snapshots, warm snapshots, apt,
    /// kernels) and how big each is.
    #[command(name = "_cache")]
    Cache {
        /// Remove the snapshots and warm snapshots (runs make them again).
        #[arg(long)]
        drop: bool,
    },
    /// A command from cella.yaml, with arguments appended to its `run`.
    #[command(external_subcommand)]
    External(Vec<String>),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_names_cella_yaml_may_not_use_are_the_builtins() {
        let mut names: Vec<String> = super::Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        names.sort();
        assert_eq!(names, cella::config::BUILTIN_COMMANDS);
    }
}
