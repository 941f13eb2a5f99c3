//! What a VM restored from a snapshot must not keep from the moment the
//! snapshot was taken: the wall clock and the random pool's seed.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::sys;

/// RNDADDENTROPY: _IOW('R', 0x03, int[2]).
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// RNDRESEEDCRNG: _IO('R', 0x07).
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Sets CLOCK_REALTIME to the host's, given in nanoseconds since the epoch.
pub fn set_clock(realtime_ns: u64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: (realtime_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (realtime_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: ts is a valid timespec; PID 1 has CAP_SYS_TIME.
    sys::check(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) }).map(drop)
}

/// Mixes `seed` into the kernel's pool, credited as entropy, and reseeds
/// the generator at once so every reader from now on sees the new state.
pub fn add_entropy(seed: &[u8]) -> io::Result<()> {
    if seed.is_empty() {
        return Ok(());
    }
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + seed.len());
    info.extend_from_slice(&((seed.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(seed.len() as i32).to_ne_bytes());
    info.extend_from_slice(seed);
    // The kernel reads the header as ints: keep the buffer 4-aligned.
    let words: Vec<u32> = info
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_ne_bytes(w)
        })
        .collect();
    let fd = match RANDOM.load(Ordering::Relaxed) {
        -1 => sys::open("/dev/urandom", libc::O_WRONLY | libc::O_CLOEXEC)?,
        fd => fd,
    };
    // SAFETY: `words` holds a rand_pool_info whose buf_size matches the
    // bytes that follow its header; the kernel only reads it.
    let added = sys::check(unsafe { libc::ioctl(fd, RNDADDENTROPY, words.as_ptr()) });
    // SAFETY: RNDRESEEDCRNG takes no argument.
    let reseeded = added.and_then(|_| sys::check(unsafe { libc::ioctl(fd, RNDRESEEDCRNG) }));
    if fd != RANDOM.load(Ordering::Relaxed) {
        sys::close(fd);
    }
    reseeded.map(drop)
}

/// /dev/urandom, opened before a snapshot is taken ([`open_random`]).
static RANDOM: AtomicI32 = AtomicI32::new(-1);

/// Opens /dev/urandom for [`add_entropy`] now, before the hello, so that
/// a run restored from a snapshot does not: each system call is emulated
/// guest kernel work on some hosts.
pub fn open_random() -> io::Result<()> {
    let fd = sys::open("/dev/urandom", libc::O_WRONLY | libc::O_CLOEXEC)?;
    RANDOM.store(fd, Ordering::Relaxed);
    Ok(())
}
