//! Finds the named virtio-console ports and opens each one once.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use guest_init::{NUM_PORTS, PORT_CONTROL, PORT_NAMES, PORT_STDIN};

use crate::sys;

const SYSFS_PORTS: &str = "/sys/class/virtio-ports";
/// Ports are added by the host after the device comes up; wait this long at most.
const PORT_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_MS: u64 = 5;

/// The open port file descriptors (all close-on-exec, all above 2).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub control: RawFd,
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// A build VM's changes to the root go out here.
    pub export: RawFd,
}

/// Which of our ports a sysfs `name` attribute names, by port id.
fn port_id(name: &str) -> Option<usize> {
    let name = name.trim_end_matches('\n');
    PORT_NAMES.iter().position(|&p| p == name)
}

fn open_flags(id: usize) -> libc::c_int {
    match id as u32 {
        PORT_CONTROL => libc::O_RDWR,
        PORT_STDIN => libc::O_RDONLY,
        _ => libc::O_WRONLY,
    }
}

/// Polls sysfs until all ports are named and their device nodes open.
pub fn open_all() -> io::Result<Ports> {
    let deadline = Instant::now() + PORT_TIMEOUT;
    let mut fds: [Option<RawFd>; NUM_PORTS as usize] = [None; NUM_PORTS as usize];
    loop {
        scan(&mut fds)?;
        if let [Some(control), Some(stdin), Some(stdout), Some(stderr), Some(export)] = fds {
            return Ok(Ports {
                control,
                stdin,
                stdout,
                stderr,
                export,
            });
        }
        if Instant::now() >= deadline {
            let missing: Vec<&str> = (0..NUM_PORTS as usize)
                .filter(|&i| fds[i].is_none())
                .map(|i| PORT_NAMES[i])
                .collect();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "virtio-console ports {} did not appear within {} s (seen: {})",
                    missing.join(", "),
                    PORT_TIMEOUT.as_secs(),
                    seen()
                ),
            ));
        }
        sys::sleep_ms(POLL_MS);
    }
}

/// What sysfs shows, for the timeout message: virtio devices and named ports.
fn seen() -> String {
    let list = |dir: &str, attr: &str| -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return vec![format!("no {dir}")];
        };
        entries
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let value = sys::read_small_file(&format!("{dir}/{name}/{attr}"));
                format!("{name}={}", value.as_deref().unwrap_or("?").trim_end())
            })
            .collect()
    };
    let mut all = list("/sys/bus/virtio/devices", "device");
    all.extend(list(SYSFS_PORTS, "name"));
    all.join(" ")
}

/// One pass over /sys/class/virtio-ports, opening the ports not yet open.
fn scan(fds: &mut [Option<RawFd>; NUM_PORTS as usize]) -> io::Result<()> {
    let dir = match std::fs::read_dir(SYSFS_PORTS) {
        Ok(dir) => dir,
        // The class directory appears with the first port.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io::Error::new(e.kind(), sys::describe(SYSFS_PORTS, &e))),
    };
    for entry in dir {
        let entry = entry?;
        let dev = entry.file_name();
        let Some(dev) = dev.to_str() else { continue };
        // The name attribute exists only once the host has named the port.
        let Ok(name) = sys::read_small_file(&format!("{SYSFS_PORTS}/{dev}/name")) else {
            continue;
        };
        let Some(id) = port_id(&name) else { continue };
        if fds[id].is_some() {
            continue;
        }
        let path = format!("/dev/{dev}");
        match sys::open(&path, open_flags(id) | libc::O_NOCTTY) {
            Ok(fd) => fds[id] = Some(sys::above_stdio(fd)?),
            // devtmpfs creates the node asynchronously: try again next pass.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), sys::describe(&path, &e))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_init::{PORT_STDERR, PORT_STDOUT};

    #[test]
    fn names_map_to_port_ids_and_modes() {
        assert_eq!(port_id("cella.control\n"), Some(PORT_CONTROL as usize));
        assert_eq!(port_id("cella.stderr"), Some(PORT_STDERR as usize));
        assert_eq!(port_id("org.qemu.guest_agent.0\n"), None);
        assert_eq!(open_flags(PORT_CONTROL as usize), libc::O_RDWR);
        assert_eq!(open_flags(PORT_STDIN as usize), libc::O_RDONLY);
        assert_eq!(open_flags(PORT_STDOUT as usize), libc::O_WRONLY);
        assert_eq!(open_flags(PORT_STDERR as usize), libc::O_WRONLY);
    }
}
