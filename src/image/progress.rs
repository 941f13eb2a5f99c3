//! A progress line for long build work (tar import, packing), redrawn in
//! place on a terminal and silent otherwise: logs get the step lines only.

use std::cell::Cell;
use std::io::{self, IsTerminal, Read, Write};
use std::time::{Duration, Instant};

const REDRAW: Duration = Duration::from_millis(200);

pub struct Progress {
    label: &'static str,
    /// What is being worked on, after the label ("layer 2/3").
    item: String,
    started: Instant,
    total: u64,
    done: Cell<u64>,
    tty: bool,
    last: Cell<Option<Instant>>,
    shown: Cell<bool>,
}

impl Progress {
    /// `total` bytes of work (0 when unknown: a byte count is shown).
    pub fn new(label: &'static str, total: u64) -> Progress {
        Progress::item(label, total, String::new())
    }

    /// A progress line naming the `item` worked on.
    pub fn item(label: &'static str, total: u64, item: String) -> Progress {
        Progress {
            label,
            item,
            started: Instant::now(),
            total,
            done: Cell::new(0),
            tty: io::stderr().is_terminal(),
            last: Cell::new(None),
            shown: Cell::new(false),
        }
    }

    pub fn add(&self, bytes: u64) {
        self.done.set(self.done.get() + bytes);
        if !self.tty {
            return;
        }
        let now = Instant::now();
        match self.last.get() {
            None => {
                self.last.set(Some(now));
                return;
            }
            Some(t) if now.duration_since(t) < REDRAW => return,
            Some(_) => self.last.set(Some(now)),
        }
        let mib = self.done.get() as f64 / (1024.0 * 1024.0);
        let secs = now.duration_since(self.started).as_secs_f64().max(0.001);
        let rate = format!("{:.1} MiB/s", mib / secs);
        let label = match self.item.is_empty() {
            true => self.label.to_owned(),
            false => format!("{} {}", self.label, self.item),
        };
        let line = match (self.done.get() * 100).checked_div(self.total) {
            Some(pct) => format!(
                "\r       {label}: {:3}% ({mib:.0} of {:.0} MiB, {rate})\x1b[K",
                pct.min(100),
                self.total as f64 / (1024.0 * 1024.0)
            ),
            None => format!("\r       {label}: {mib:.0} MiB, {rate}\x1b[K"),
        };
        let _ = io::stderr().write_all(line.as_bytes());
        self.shown.set(true);
    }

    /// Clears the progress line, if one was drawn.
    pub fn finish(&self) {
        if self.shown.get() {
            let _ = io::stderr().write_all(b"\r\x1b[K");
        }
    }
}

/// Counts what is read through it into a [`Progress`].
pub struct ProgressReader<'p, R> {
    inner: R,
    progress: &'p Progress,
}

impl<'p, R: Read> ProgressReader<'p, R> {
    pub fn new(inner: R, progress: &'p Progress) -> Self {
        ProgressReader { inner, progress }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}
