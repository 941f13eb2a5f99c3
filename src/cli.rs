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
    #[command(subcommand)]
    pub command: Option<Sub>,
}

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Run any program in a container: `cella _run CONTAINER PROG [ARGS...]`.
    #[command(name = "_run")]
    Run {
        container: String,
        /// The program and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        argv: Vec<String>,
    },
    /// List the containers and commands of cella.yaml.
    #[command(name = "_list")]
    List,
    /// A command from cella.yaml, with arguments appended to its `run`.
    #[command(external_subcommand)]
    External(Vec<String>),
}
