//! cella's exit statuses, in one place for the guest (which reports how a
//! workload or a supervised child ended) and the host (which exits with
//! it). The numbers follow the shell's conventions and timeout(1)'s.

/// An exit status of `cella`, by what decided it.
///
/// ```
/// use guest_init::ExitCode;
/// assert_eq!(ExitCode::NotFound.code(), 127);
/// assert_eq!(ExitCode::Signal(15).code(), 143);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// The program ran and exited with this status of its own (0–255).
    Status(u8),
    /// 124: `--timeout` stopped the VM before the program ended (as timeout(1)).
    Timeout,
    /// 125: cella itself failed (bad configuration, a build, the VM or
    /// guest-init), so the program did not run or its run was cut short.
    Cella,
    /// 126: the program was found but cannot be executed (no permission,
    /// not an executable format, a directory…).
    CannotExecute,
    /// 127: the program was not found (no such file, nor on `PATH`).
    NotFound,
    /// 128+N: the program was killed by signal N, or cella was stopped by
    /// signal N (Ctrl-C before the program started, a supervised run
    /// stopped by the host's SIGINT, SIGTERM or SIGQUIT).
    Signal(i32),
}

impl ExitCode {
    /// The number a process exits with.
    pub const fn code(self) -> i32 {
        match self {
            ExitCode::Status(status) => status as i32,
            ExitCode::Timeout => 124,
            ExitCode::Cella => 125,
            ExitCode::CannotExecute => 126,
            ExitCode::NotFound => 127,
            ExitCode::Signal(signal) => 128 + signal,
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    /// The low 8 bits of [`ExitCode::code`], as a process's status has.
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code.code() as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let codes = [
            ExitCode::Status(0),
            ExitCode::Status(3),
            ExitCode::Status(255),
            ExitCode::Timeout,
            ExitCode::Cella,
            ExitCode::CannotExecute,
            ExitCode::NotFound,
            ExitCode::Signal(libc::SIGKILL),
            ExitCode::Signal(libc::SIGTERM),
        ]
        .map(ExitCode::code);
        assert_eq!(codes, [0, 3, 255, 124, 125, 126, 127, 137, 143]);
    }
}
