//! `CELLA_STATS`: where a run's time goes, printed as it passes, for
//! bench/. Switched on once per process by [`enable`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);

/// Prints the marks from now on.
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Whether the marks are printed.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// When stats are on, prints how long after the first mark `event`
/// happened.
pub fn mark(event: &str) {
    static FIRST: OnceLock<Instant> = OnceLock::new();
    let first = *FIRST.get_or_init(Instant::now);
    if enabled() {
        eprintln!(
            "cella-stats: {:.3} s {event}",
            first.elapsed().as_secs_f64()
        );
    }
}
