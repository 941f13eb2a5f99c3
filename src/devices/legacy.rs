//! The legacy PC devices the guest kernel touches: an 8250 UART that carries
//! only the kernel log, and the i8042 controller's reset line, which the
//! guest uses to power off (`reboot=k`).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use super::bus::{lock, BusDevice};

/// The kernel log as it arrives on the serial port: the last bytes are kept
/// for error reports, and with `-v` everything is copied to stderr.
pub struct ConsoleLog {
    tail: VecDeque<u8>,
    echo: bool,
}

/// How much of the kernel log is kept for an error report.
const LOG_TAIL: usize = 16 * 1024;

impl ConsoleLog {
    pub fn new(echo: bool) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(ConsoleLog {
            tail: VecDeque::with_capacity(LOG_TAIL),
            echo,
        }))
    }

    fn push(&mut self, byte: u8) {
        if self.tail.len() == LOG_TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(byte);
        if self.echo {
            // The log is diagnostics only: a closed stderr must not stop the VM.
            let _ = std::io::stderr().write_all(&[byte]);
        }
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
