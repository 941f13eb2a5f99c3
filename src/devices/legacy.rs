//! The legacy PC devices the guest kernel touches: an 8250 UART that carries
//! only the kernel log, and the i8042 controller's reset line, which the
//! guest uses to power off (`reboot=k`).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use super::bus::{lock, BusDevice};
use crate::text::escape_bytes;

/// The kernel log as it arrives on the serial port: the last bytes are kept
/// for error reports, and with `-v` everything is copied to stderr, line
/// by line with control characters escaped (the guest, a root workload
/// writing to /dev/kmsg, chooses what it says).
pub struct ConsoleLog {
    tail: VecDeque<u8>,
    echo: Option<Box<dyn Write + Send>>,
    /// The line being echoed, until its end.
    line: Vec<u8>,
}

/// How much of the kernel log is kept for an error report.
const LOG_TAIL: usize = 16 * 1024;
/// An echoed line longer than this is broken in two.
const ECHO_LINE: usize = 4096;

impl ConsoleLog {
    pub fn new(echo: bool) -> Arc<Mutex<Self>> {
        let stderr = echo.then(|| Box::new(std::io::stderr()) as Box<dyn Write + Send>);
        Self::with_echo(stderr)
    }

    /// A log that copies what arrives to `echo`.
    pub fn with_echo(echo: Option<Box<dyn Write + Send>>) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(ConsoleLog {
            tail: VecDeque::with_capacity(LOG_TAIL),
            echo,
            line: Vec::new(),
        }))
    }

    fn push(&mut self, byte: u8) {
        if self.tail.len() == LOG_TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(byte);
        if self.echo.is_none() {
            return;
        }
        if byte == b'\n' {
            self.echo_line();
            return;
        }
        if self.line.len() == ECHO_LINE {
            self.echo_line();
        }
        self.line.push(byte);
    }

    /// Writes the line echoed so far, escaped, and starts a new one.
    fn echo_line(&mut self) {
        let Some(echo) = self.echo.as_mut() else {
            return;
        };
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        let mut text = escape_bytes(line);
        text.push('\n');
        // The log is diagnostics only: a closed stderr must not stop the VM.
        let _ = echo.write_all(text.as_bytes());
        self.line.clear();
    }

    /// The last `n` non-empty lines of the log.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        let bytes: Vec<u8> = self.tail.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<String> = text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .filter(|l| !l.trim().is_empty())
            .collect();
        lines[lines.len().saturating_sub(n)..].to_vec()
    }

    /// Whether the kernel said it panicked.
    pub fn saw_panic(&self) -> bool {
        self.last_lines(200)
            .iter()
            .any(|l| l.contains("Kernel panic"))
    }
}

impl Drop for ConsoleLog {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.echo_line();
        }
    }
}

/// An 8250 UART without FIFOs or interrupts: enough for the kernel's polled
/// console writes. The guest never reads from it.
pub struct Serial {
    log: Arc<Mutex<ConsoleLog>>,
    ier: u8,
    lcr: u8,
    mcr: u8,
    scratch: u8,
    divisor: u16,
}

const DLAB: u8 = 0x80;
const LSR_THR_EMPTY: u8 = 0x20;
const LSR_IDLE: u8 = 0x40;
const MSR_DCD_DSR_CTS: u8 = 0xb0;
const IIR_NONE: u8 = 0x01;

impl Serial {
    pub fn new(log: Arc<Mutex<ConsoleLog>>) -> Self {
        Serial {
            log,
            ier: 0,
            lcr: 0x03,
            mcr: 0x08,
            scratch: 0,
            divisor: 12,
        }
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let dlab = self.lcr & DLAB != 0;
        let value = match offset {
            0 if dlab => self.divisor as u8,
            1 if dlab => (self.divisor >> 8) as u8,
            0 => 0,
            1 => self.ier,
            2 => IIR_NONE,
            3 => self.lcr,
            4 => self.mcr,
            5 => LSR_THR_EMPTY | LSR_IDLE,
            6 => MSR_DCD_DSR_CTS,
            7 => self.scratch,
            _ => 0xff,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        let dlab = self.lcr & DLAB != 0;
        match offset {
            0 if dlab => self.divisor = (self.divisor & 0xff00) | u16::from(value),
            1 if dlab => self.divisor = (self.divisor & 0x00ff) | (u16::from(value) << 8),
            0 => lock(&self.log).push(value),
            1 => self.ier = value & 0x0f,
            3 => self.lcr = value,
            4 => self.mcr = value,
            7 => self.scratch = value,
            _ => {}
        }
    }
}

/// The i8042 keyboard controller, reduced to its reset line: writing 0xFE
/// to the command port is how a `reboot=k` kernel restarts, and for cella a
/// restart means the guest is done.
pub struct I8042 {
    power_off: EventFd,
}

const CMD_RESET_CPU: u8 = 0xfe;

impl I8042 {
    pub fn new(power_off: EventFd) -> Self {
        I8042 { power_off }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status 0: output buffer empty, input buffer empty, so the kernel's
        // kb_wait() returns at once.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Port 0x64 is offset 4 from the device's base at 0x60.
        if offset == 4 && data.first() == Some(&CMD_RESET_CPU) {
            // If the eventfd cannot be written the counter is saturated,
            // which means power-off is already signalled.
            let _ = self.power_off.write(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_collects_lines_and_reports_idle_transmitter() {
        let log = ConsoleLog::new(false);
        let mut s = Serial::new(log.clone());
        for b in b"first\r\nKernel panic - not syncing\r\n" {
            s.write(0, &[*b]);
        }
        let mut lsr = [0u8];
        s.read(5, &mut lsr);
        assert_eq!(lsr[0] & LSR_THR_EMPTY, LSR_THR_EMPTY);
        let log = lock(&log);
        assert_eq!(log.last_lines(1), vec!["Kernel panic - not syncing"]);
        assert!(log.saw_panic());
    }

    /// A `Write` whose bytes a test can read afterwards.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn echoed_log_is_escaped_line_by_line() {
        let sink = Sink::default();
        let log = ConsoleLog::with_echo(Some(Box::new(sink.clone())));
        let mut s = Serial::new(log.clone());
        for b in b"[ 1.0] ok\r\n\x1b]0;pwned\x07\x1b[2K\rcella: fake\r\n\xff tail" {
            s.write(0, &[*b]);
        }
        assert_eq!(
            String::from_utf8_lossy(&lock(&sink.0)),
            "[ 1.0] ok\n\\e]0;pwned\\x07\\e[2K\\rcella: fake\n"
        );
        drop(s);
        drop(log);
        let all = lock(&sink.0).clone();
        assert!(all.ends_with(b"\\xff tail\n"), "the last line on drop");
        assert!(!all.contains(&0x1b) && !all.contains(&7));

        // An endless line comes out in pieces, not held whole.
        let sink = Sink::default();
        let log = ConsoleLog::with_echo(Some(Box::new(sink.clone())));
        for _ in 0..3 * ECHO_LINE {
            lock(&log).push(b'x');
        }
        assert!(lock(&log).line.len() <= ECHO_LINE);
        assert_eq!(lock(&sink.0).len(), 2 * (ECHO_LINE + 1));
    }

    #[test]
    fn serial_divisor_latch_does_not_print() {
        let log = ConsoleLog::new(false);
        let mut s = Serial::new(log.clone());
        s.write(3, &[DLAB]);
        s.write(0, b"x");
        s.write(3, &[0x03]);
        assert!(lock(&log).last_lines(5).is_empty());
    }

    #[test]
    fn i8042_reset_signals_power_off() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        let mut dev = I8042::new(evt.try_clone().expect("clone"));
        dev.write(0, &[CMD_RESET_CPU]);
        assert!(evt.read().is_err(), "port 0x60 is not the command port");
        dev.write(4, &[CMD_RESET_CPU]);
        assert_eq!(evt.read().expect("signalled"), 1);
    }
}
