//! Where guest-init's time goes, when the host asks (`RunSpec::stats`,
//! from `CELLA_STATS`): the end of each phase of a run on the monotonic
//! clock, sent as one `GuestMsg::Phases` before the final message. Off,
//! a mark costs one relaxed load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use guest_init::{GuestMsg, MAX_PHASES};

static ON: AtomicBool = AtomicBool::new(false);
/// The run spec's arrival, then (name, end) of each phase, in µs.
static MARKS: Mutex<(u64, Vec<(&'static str, u64)>)> = Mutex::new((0, Vec::new()));

fn now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1000
}

/// The run spec arrived now; marks are kept from now on if `on`.
pub fn start(on: bool) {
    if !on {
        return;
    }
    if let Ok(mut marks) = MARKS.lock() {
        marks.0 = now_us();
    }
    ON.store(true, Ordering::Relaxed);
}

/// The phase `name` ends now.
pub fn mark(name: &'static str) {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    let at = now_us();
    if let Ok(mut marks) = MARKS.lock() {
        if marks.1.len() < MAX_PHASES {
            marks.1.push((name, at));
        }
    }
}

/// The marks so far as a message, if stats are on.
pub fn report() -> Option<GuestMsg> {
    if !ON.load(Ordering::Relaxed) {
        return None;
    }
    let marks = MARKS.lock().ok()?;
    let start = marks.0;
    Some(GuestMsg::Phases {
        marks: marks
            .1
            .iter()
            .map(|(name, at)| (name.to_string(), at.saturating_sub(start)))
            .collect(),
    })
}
