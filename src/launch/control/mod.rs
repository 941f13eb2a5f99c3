//! The host side of the guest protocol: drives a running VM's console
//! ports (stdin in; stdout, stderr and control out), forwards signals, and
//! turns the guest's final message into an exit status.
//!
//! The guest may be hostile: each pass of the event loop handles a bounded
//! amount of what it sent ([`OUTPUT_PER_PASS`], [`MESSAGES_PER_PASS`]), so
//! timers and signals are looked at between passes whatever it sends, and
//! every message is checked against the session's state ([`protocol`]).

pub mod protocol;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};
use std::sync::OnceLock;
use std::time::Duration;

use guest_init::{
    encode, DecodeError, Decoder, GuestMsg, HostMsg, Prepare, RunSpec, WinSize, PORT_CONTROL,
    PORT_EXPORT, PORT_STDERR, PORT_STDIN, PORT_STDOUT, PROTOCOL_VERSION,
};
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::iterator::SignalsInfo;
use signal_hook::low_level::siginfo::Cause;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use super::stats::mark;
use super::terminal::{self, RawMode};
use crate::devices::bus::lock;
use crate::devices::virtio::console::RX_HIGH_WATER;
use crate::sandbox::seccomp;
use crate::text::{escape, Escaped};
use crate::vmm::Vm;
use protocol::{Protocol, Violation};

/// Signals `cella` passes on to the workload.
pub const FORWARDED_SIGNALS: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The third SIGINT/SIGTERM/SIGQUIT stops the VM even if the workload
/// ignores them (as `docker compose` does on a third Ctrl-C); a build VM
/// stops on the first.
const FORCE_STOP_AFTER: u32 = 3;

/// How many kernel log lines an error report shows.
const LOG_LINES: usize = 20;

/// Bytes of guest output (all ports) handled per pass of the event loop.
const OUTPUT_PER_PASS: usize = 256 << 10;
/// Control messages handled per pass of the event loop.
const MESSAGES_PER_PASS: usize = 16;
/// Passes that collect what the guest wrote before its final message (or
/// before it stopped), each of up to every port's high-water mark: more
/// than a well-behaved guest's full rings, and a bound for one that keeps
/// writing.
const FINAL_PASSES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("the guest did not become ready within {0} s{1}")]
    BootTimeout(u64, LogTail),
    #[error("the guest stopped before the workload finished: {0}{1}")]
    Died(String, LogTail),
    #[error("guest speaks protocol version {0}, this cella speaks {PROTOCOL_VERSION}")]
    Version(u32),
    #[error("guest-init failed: {}", Escaped(.0))]
    Init(String),
    #[error("the guest broke the protocol: {0}")]
    Protocol(Violation),
    #[error("the build VM sent more than {} of changes, the limit for an image", crate::config::settings::limit_text("image", *.0))]
    ExportTooLarge(u64),
    #[error("cannot prepare the VM for the run")]
    Prepare(#[source] crate::vmm::VmError),
    #[error("event loop")]
    Io(#[source] std::io::Error),
}

/// The last kernel log lines, shown under an error.
#[derive(Debug)]
pub struct LogTail(Vec<String>);

impl std::fmt::Display for LogTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return write!(
                f,
                " (the kernel printed nothing; run with -v to see its log)"
            );
        }
        write!(f, "; last kernel messages:")?;
        for line in &self.0 {
            write!(f, "\n    {}", Escaped(line))?;
        }
        Ok(())
    }
}

/// How a run ended, as far as the host is concerned.
pub enum Outcome {
    /// The workload finished; this is cella's exit status.
    Status(i32),
    /// cella was signalled before the workload started.
    Interrupted(i32),
    /// The run's time limit passed; the VM was stopped.
    TimedOut,
}

/// How long a run may take, what its VM has (for messages), and what the
/// guest may make the host hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Until guest-init reports the workload started.
    pub boot: Duration,
    /// From the moment the run spec goes out (`--timeout`).
    pub run: Option<Duration>,
    pub mem_mib: u32,
    /// Bytes of control messages held from the guest (`limits.control_queue`).
    pub control_queue: usize,
    /// Bytes of a build VM's export stream (`limits.image`).
    pub export: u64,
}

#[derive(Clone, Copy)]
enum Token {
    Kick(usize),
    PowerOff,
    VcpuStopped,
    Stdin,
    Signal,
    BootTimer,
    RunTimer,
    /// The NIC's backend socket is readable (edge-triggered).
    Net,
}

impl Token {
    fn to_u64(self) -> u64 {
        match self {
            Token::Kick(i) => 0x100 + i as u64,
            Token::PowerOff => 1,
            Token::VcpuStopped => 2,
            Token::Stdin => 3,
            Token::Signal => 4,
            Token::BootTimer => 5,
            Token::RunTimer => 6,
            Token::Net => 7,
        }
    }

    fn from_u64(v: u64) -> Option<Token> {
        Some(match v {
            1 => Token::PowerOff,
            2 => Token::VcpuStopped,
            3 => Token::Stdin,
            4 => Token::Signal,
            5 => Token::BootTimer,
            6 => Token::RunTimer,
            7 => Token::Net,
            v if v >= 0x100 => Token::Kick((v - 0x100) as usize),
            _ => return None,
        })
    }
}

enum Input {
    Data(Vec<u8>),
    Eof,
}

/// A thread that reads host stdin in chunks; bounded, so a fast producer
/// waits for the guest instead of filling host memory.
fn spawn_stdin(ready: EventFd) -> std::io::Result<Receiver<Input>> {
    let (tx, rx) = sync_channel(4);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            if let Err(e) = seccomp::install(seccomp::Kind::Stdin) {
                eprintln!("cella: {}", crate::text::error_chain(&e, ": "));
                let _ = tx.send(Input::Eof);
                let _ = ready.write(1);
                return;
            }
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let msg = match stdin.read(&mut buf) {
                    Ok(0) => Input::Eof,
                    Ok(n) => Input::Data(buf[..n].to_vec()),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => Input::Eof,
                };
                let eof = matches!(msg, Input::Eof);
                if tx.send(msg).is_err() {
                    return;
                }
                let _ = ready.write(1);
                if eof {
                    return;
                }
            }
        })?;
    Ok(rx)
}

/// Set while a session forwards signals to its guest. Outside one (a
/// build's host-side steps, between two build VMs) the forwarded signals
/// keep their default action: Ctrl-C stops cella.
static FORWARDING: AtomicBool = AtomicBool::new(false);

/// Makes the forwarded signals act as by default whenever no session is
/// forwarding them (signal-hook keeps its handler installed for good).
fn default_outside_sessions() -> std::io::Result<()> {
    static REGISTERED: OnceLock<Result<(), i32>> = OnceLock::new();
    let result = REGISTERED.get_or_init(|| {
        for sig in FORWARDED_SIGNALS {
            let action = move || {
                if !FORWARDING.load(Ordering::SeqCst) {
                    let _ = signal_hook::low_level::emulate_default_handler(sig);
                }
            };
            // SAFETY: the action only loads an atomic and calls
            // emulate_default_handler, both async-signal-safe.
            unsafe { signal_hook::low_level::register(sig, action) }
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EINVAL))?;
        }
        crate::sandbox::signals_taken_over();
        Ok(())
    });
    result.map_err(std::io::Error::from_raw_os_error)
}

/// Ends forwarding when a session ends, however it ends.
struct Forwarding(signal_hook::iterator::Handle);

impl Drop for Forwarding {
    fn drop(&mut self) {
        FORWARDING.store(false, Ordering::SeqCst);
        self.0.close();
    }
}

/// Catches the forwarded signals (and SIGWINCH) on a thread and queues their numbers.
fn spawn_signals(ready: EventFd) -> std::io::Result<(Receiver<i32>, Forwarding)> {
    default_outside_sessions()?;
    let caught = FORWARDED_SIGNALS.iter().chain(&[libc::SIGWINCH]);
    let mut signals = SignalsInfo::<WithOrigin>::new(caught)?;
    FORWARDING.store(true, Ordering::SeqCst);
    let forwarding = Forwarding(signals.handle());
    let (tx, rx) = sync_channel(64);
    // In a VM's process, a signal another process sent went to cella too,
    // which passes it on: only cella's and the kernel's (a terminal's
    // keys, which reach the whole process group) count, so none counts twice.
    let parent = crate::sandbox::parent_pid();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Err(e) = seccomp::install(seccomp::Kind::Signals) {
                eprintln!("cella: {}", crate::text::error_chain(&e, ": "));
                return;
            }
            for origin in signals.forever() {
                let sent_by = origin.process.map(|p| p.pid);
                if let (Cause::Sent(_), Some(parent)) = (origin.cause, parent) {
                    if sent_by != Some(parent) {
                        continue;
                    }
                }
                if tx.send(origin.signal).is_err() {
                    return;
                }
                let _ = ready.write(1);
            }
        })?;
    Ok((rx, forwarding))
}

/// What a build VM sends besides the streams: the root's changes, and
/// which step of its batch is running.
pub struct BuildIo<'a> {
    /// Receives the export stream (lib.rs `ExportRecord`s).
    pub export: &'a mut dyn Write,
    /// The step the guest last said it started.
    pub step: Option<u32>,
    /// The first error writing `export`; later data is dropped.
    pub error: Option<std::io::Error>,
    written: u64,
}

impl<'a> BuildIo<'a> {
    pub fn new(export: &'a mut dyn Write) -> Self {
        BuildIo {
            export,
            step: None,
            error: None,
            written: 0,
        }
    }

    /// Passes `data` on unless the stream would grow past `limit` bytes:
    /// then nothing more is written and the build fails.
    fn write(&mut self, data: &[u8], limit: u64) -> Result<(), GuestError> {
        let total = self.written.saturating_add(data.len() as u64);
        if total > limit {
            return Err(GuestError::ExportTooLarge(limit));
        }
        self.written = total;
        if self.error.is_none() {
            if let Err(e) = self.export.write_all(data) {
                self.error = Some(e);
            }
        }
        Ok(())
    }
}

/// Prepares a VM whose guest-init is ready for its run spec: saves a
/// snapshot, inserts the run's disks. Called once, before the spec is sent.
pub type OnReady<'a> = dyn FnMut(&Vm) -> Result<(), GuestError> + 'a;

/// What the host does once guest-init waits for its run spec.
pub struct Ready<'a> {
    /// First, once: saves a plain snapshot, inserts the run's disks.
    pub on_ready: &'a mut OnReady<'a>,
    /// Then, if set, the guest is asked to ready this root, and the
    /// function saves the warm snapshot once it has; the spec follows.
    pub warm: Option<(Prepare, &'a mut OnReady<'a>)>,
}

struct Session<'a, 'b, 'c, 'd> {
    vm: &'a Vm,
    spec: RunSpec,
    ready: Ready<'b>,
    build: Option<&'c mut BuildIo<'d>>,
    limits: Limits,
    /// The host terminal in raw mode while the guest's pty has it;
    /// restored when the session ends, however it ends.
    raw: Option<RawMode>,
    decoder: Decoder,
    protocol: Protocol,
    stdout_open: bool,
    stderr_open: bool,
}

/// Runs `spec` in `vm` and waits for its exit status. A booting guest
/// gets the spec after its hello; a `restored` one, whose hello was
/// answered before the snapshot, gets it at once. `ready` runs first.
pub fn run<'b, 'c, 'd>(
    vm: &Vm,
    spec: RunSpec,
    limits: Limits,
    restored: bool,
    ready: Ready<'b>,
    build: Option<&'c mut BuildIo<'d>>,
    net: Option<RawFd>,
) -> Result<Outcome, GuestError> {
    let io = GuestError::Io;
    let epoll = Epoll::new().map_err(io)?;
    if let Some(fd) = net {
        let events = EventSet::IN | EventSet::EDGE_TRIGGERED;
        epoll
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(events, Token::Net.to_u64()),
            )
            .map_err(io)?;
    }
    let add = |fd: i32, token: Token| {
        epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, token.to_u64()),
        )
    };
    for (i, kick) in vm.kicks.iter().enumerate() {
        add(kick.evt.as_raw_fd(), Token::Kick(i)).map_err(io)?;
    }
    add(vm.power_off.as_raw_fd(), Token::PowerOff).map_err(io)?;
    add(vm.vcpu_stopped.as_raw_fd(), Token::VcpuStopped).map_err(io)?;
    let stdin_ready = EventFd::new(EFD_NONBLOCK).map_err(io)?;
    add(stdin_ready.as_raw_fd(), Token::Stdin).map_err(io)?;
    let stdin = spawn_stdin(stdin_ready.try_clone().map_err(io)?).map_err(io)?;
    let signal_ready = EventFd::new(EFD_NONBLOCK).map_err(io)?;
    add(signal_ready.as_raw_fd(), Token::Signal).map_err(io)?;
    let (signals, _forwarding) =
        spawn_signals(signal_ready.try_clone().map_err(io)?).map_err(io)?;
    let errno = |e: vmm_sys_util::errno::Error| io(std::io::Error::from_raw_os_error(e.errno()));
    let mut timer = TimerFd::new().map_err(errno)?;
    timer.reset(limits.boot, None).map_err(errno)?;
    add(timer.as_raw_fd(), Token::BootTimer).map_err(io)?;
    let mut run_timer = TimerFd::new().map_err(errno)?;
    add(run_timer.as_raw_fd(), Token::RunTimer).map_err(io)?;
    // Before the first request of the guest is looked at; after the
    // threads above started, so they have only filters of their own.
    seccomp::install(seccomp::Kind::Vmm).map_err(|e| io(std::io::Error::other(e)))?;

    let mut session = Session {
        vm,
        protocol: Protocol::new(&spec),
        spec,
        ready,
        build,
        limits,
        raw: None,
        decoder: Decoder::with_limit(limits.control_queue),
        stdout_open: true,
        stderr_open: true,
    };
    if restored {
        session.guest_ready()?;
    }
    let mut run_timer_armed = false;
    let mut stdin_done = false;
    let mut stop_requests = 0;
    // An interrupted build is thrown away: its VM stops on the first stop
    // signal, whatever the step does with it (apt-get and dpkg hold
    // SIGTERM back).
    let force_stop_after = match session.build {
        Some(_) => 1,
        None => FORCE_STOP_AFTER,
    };
    let mut events = vec![EpollEvent::default(); 32];
    loop {
        // With guest work left over from the last pass, only look at what
        // else is ready; else sleep until something is.
        let timeout = if session.busy() { 0 } else { -1 };
        let n = match epoll.wait(timeout, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        let mut guest_stopped = false;
        for ev in &events[..n] {
            match Token::from_u64(ev.data()) {
                Some(Token::Kick(i)) => {
                    let kick = &vm.kicks[i];
                    let _ = kick.evt.read();
                    lock(&vm.virtio[kick.device]).notify(kick.queue);
                }
                Some(Token::PowerOff) | Some(Token::VcpuStopped) => guest_stopped = true,
                Some(Token::Stdin) => {
                    let _ = stdin_ready.read();
                }
                Some(Token::Signal) => {
                    let _ = signal_ready.read();
                    while let Ok(sig) = signals.try_recv() {
                        if sig == libc::SIGWINCH {
                            // Before the spec goes out, the size goes with it.
                            if let (Some(_), true, Some((rows, cols))) = (
                                session.spec.tty,
                                session.protocol.is_sent(),
                                terminal::window_size(libc::STDOUT_FILENO),
                            ) {
                                session.send(&HostMsg::Resize(WinSize { rows, cols }));
                            }
                            continue;
                        }
                        if !session.protocol.is_started() {
                            return Ok(Outcome::Interrupted(sig));
                        }
                        if [libc::SIGINT, libc::SIGTERM, libc::SIGQUIT].contains(&sig) {
                            stop_requests += 1;
                        }
                        if stop_requests >= force_stop_after {
                            if session.build.is_none() {
                                eprintln!("cella: stopping the VM ({stop_requests} stop signals)");
                            }
                            return Ok(Outcome::Interrupted(sig));
                        }
                        session.send(&HostMsg::Signal(sig));
                    }
                }
                Some(Token::BootTimer) if !session.protocol.is_started() => {
                    return Err(GuestError::BootTimeout(
                        limits.boot.as_secs(),
                        session.log_tail(),
                    ));
                }
                Some(Token::BootTimer) => {}
                // A gone backend's socket is closed, which takes it out of epoll.
                Some(Token::Net) if !vm.net_ready() => {
                    eprintln!(
                        "cella: passt, the VM's network helper, went away: the VM is offline"
                    );
                }
                Some(Token::Net) => {}
                Some(Token::RunTimer) => {
                    let after = limits.run.unwrap_or_default().as_secs_f64();
                    eprintln!("cella: the command ran for {after} s (--timeout); stopping the VM");
                    return Ok(Outcome::TimedOut);
                }
                None => {}
            }
        }
        if let Some(status) = session.pump_output()? {
            return Ok(Outcome::Status(status));
        }
        if guest_stopped {
            // Whatever the guest queued before it went down still counts.
            lock(&vm.console).device.drain_all();
            for _ in 0..FINAL_PASSES * 16 {
                if let Some(status) = session.pump_output()? {
                    return Ok(Outcome::Status(status));
                }
                if !session.busy() {
                    break;
                }
            }
            return Err(session.died());
        }
        // Only this run's guest may see its stdin: before the spec goes
        // out, the VM may still be snapshotted, and the console's port
        // state (pending data, end-of-file) would go into the snapshot and
        // reach every run restored from it.
        if !stdin_done && session.protocol.is_sent() {
            stdin_done = session.pump_stdin(&stdin);
        }
        if let (Some(limit), true, false) =
            (limits.run, session.protocol.is_sent(), run_timer_armed)
        {
            run_timer.reset(limit, None).map_err(errno)?;
            run_timer_armed = true;
        }
    }
}

impl Session<'_, '_, '_, '_> {
    /// guest-init waits for its spec: readies the VM, then asks the guest
    /// to ready a warm snapshot or sends the spec.
    fn guest_ready(&mut self) -> Result<(), GuestError> {
        (self.ready.on_ready)(self.vm)?;
        match &self.ready.warm {
            Some((prepare, _)) => {
                self.protocol.prepare_sent();
                self.send(&HostMsg::Prepare(prepare.clone()));
                Ok(())
            }
            None => self.send_run(),
        }
    }

    /// The guest has readied its warm snapshot: saves it, sends the spec.
    fn prepared(&mut self) -> Result<(), GuestError> {
        mark("guest prepared");
        if let Some((_, save)) = self.ready.warm.take() {
            save(self.vm)?;
        }
        self.send_run()
    }

    /// Sends the run spec, with the clock and a seed taken now: the VM may
    /// have booted long ago or come from a snapshot.
    fn send_run(&mut self) -> Result<(), GuestError> {
        let mut spec = self.spec.clone();
        if spec.tty.is_some() {
            if let Some((rows, cols)) = terminal::window_size(libc::STDOUT_FILENO) {
                spec.tty = Some(WinSize { rows, cols });
            }
            // From now on the guest's pty gets the keys as typed: Ctrl-C
            // and Ctrl-Z reach its line discipline. Until now (a boot, a
            // snapshot) they still stopped cella.
            if terminal::is_terminal(libc::STDIN_FILENO) {
                self.raw = Some(RawMode::enter(libc::STDIN_FILENO).map_err(GuestError::Io)?);
            }
        }
        spec.realtime_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        spec.entropy = host_random(64).map_err(GuestError::Io)?;
        self.protocol.sent();
        self.send(&HostMsg::Run(Box::new(spec)));
        mark("run spec sent");
        Ok(())
    }

    fn send(&self, msg: &HostMsg) {
        lock(&self.vm.console)
            .device
            .send(PORT_CONTROL as usize, &encode(msg));
    }

    fn log_tail(&self) -> LogTail {
        LogTail(lock(&self.vm.log).last_lines(LOG_LINES))
    }

    fn died(&self) -> GuestError {
        let stop = lock(&self.vm.stop).clone();
        let why = match stop {
            Some(stop) => stop.to_string(),
            None if lock(&self.vm.log).saw_panic() => "the guest kernel panicked".into(),
            None => "the guest powered off".into(),
        };
        GuestError::Died(why, self.log_tail())
    }

    /// Moves host stdin into the guest while it keeps up; true once EOF is passed on.
    fn pump_stdin(&self, stdin: &Receiver<Input>) -> bool {
        let mut console = lock(&self.vm.console);
        while console.device.pending(PORT_STDIN as usize) < RX_HIGH_WATER {
            match stdin.try_recv() {
                Ok(Input::Data(d)) => console.device.send(PORT_STDIN as usize, &d),
                Ok(Input::Eof) | Err(TryRecvError::Disconnected) => {
                    console.device.close(PORT_STDIN as usize);
                    return true;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        false
    }

    /// Whether the guest sent more than the last pass handled.
    fn busy(&self) -> bool {
        self.decoder.has_line() || lock(&self.vm.console).device.has_output()
    }

    /// One pass's share of what the guest sent: up to [`OUTPUT_PER_PASS`]
    /// bytes written to the host's streams, then up to
    /// [`MESSAGES_PER_PASS`] control messages handled; the exit status
    /// once the workload has finished.
    fn pump_output(&mut self) -> Result<Option<i32>, GuestError> {
        // Messages already decoded go first; stream data taken with them
        // went out before them, as the guest wrote it.
        if !self.decoder.has_line() {
            let (output, oversized) = {
                let mut console = lock(&self.vm.console);
                let output = console.device.take_output(OUTPUT_PER_PASS);
                (output, console.device.oversized_buffer())
            };
            if let Some((size, kept)) = oversized {
                eprintln!(
                    "cella: the guest handed the console a buffer of {size} bytes; only the first {kept} were kept (limits.console-buffer in the settings file)"
                );
            }
            self.write_streams(output, true)?;
        }
        for _ in 0..MESSAGES_PER_PASS {
            let msg = self
                .decoder
                .next::<GuestMsg>()
                .map_err(|e| GuestError::Protocol(decode_violation(e)))?;
            let Some(msg) = msg else {
                break;
            };
            if let Some(status) = self.handle(msg)? {
                return Ok(Some(status));
            }
        }
        Ok(None)
    }

    /// Copies stdout and stderr data to the host's streams, export data to
    /// the build's file, and queues control bytes for the decoder (unless
    /// `control` is false: after the final message they mean nothing).
    fn write_streams(
        &mut self,
        output: Vec<(usize, Vec<u8>)>,
        control: bool,
    ) -> Result<(), GuestError> {
        for (port, data) in output {
            match port as u32 {
                // A build VM's output is the build's, not the command's:
                // `cella CMD > out` holds only what CMD printed.
                PORT_STDOUT if self.build.is_some() => {
                    write_stream(&mut std::io::stderr(), &data, &mut self.stderr_open)
                }
                PORT_STDOUT => write_stream(&mut std::io::stdout(), &data, &mut self.stdout_open),
                PORT_STDERR => write_stream(&mut std::io::stderr(), &data, &mut self.stderr_open),
                PORT_CONTROL if control => self
                    .decoder
                    .push(&data)
                    .map_err(|e| GuestError::Protocol(decode_violation(e)))?,
                PORT_EXPORT => {
                    if let Some(build) = self.build.as_mut() {
                        build.write(&data, self.limits.export)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Writes out what the workload wrote before guest-init reported its
    /// end: it may still be in the console's queues.
    fn drain_rest(&mut self) -> Result<(), GuestError> {
        for _ in 0..FINAL_PASSES {
            let rest = {
                let mut console = lock(&self.vm.console);
                console.device.drain_all();
                console.device.take_output(usize::MAX)
            };
            if rest.is_empty() {
                break;
            }
            self.write_streams(rest, false)?;
        }
        Ok(())
    }

    fn handle(&mut self, msg: GuestMsg) -> Result<Option<i32>, GuestError> {
        self.protocol.check(&msg).map_err(GuestError::Protocol)?;
        match msg {
            GuestMsg::Hello { version } if version != PROTOCOL_VERSION => {
                Err(GuestError::Version(version))
            }
            GuestMsg::Hello { .. } => {
                self.guest_ready()?;
                Ok(None)
            }
            GuestMsg::Prepared => {
                self.prepared()?;
                Ok(None)
            }
            GuestMsg::Started => {
                mark("workload started");
                Ok(None)
            }
            GuestMsg::Step { index } => {
                if let Some(build) = self.build.as_mut() {
                    build.step = Some(index);
                }
                Ok(None)
            }
            GuestMsg::Error { message } => Err(GuestError::Init(message)),
            GuestMsg::ChildEnded {
                name,
                status,
                stopped,
                message,
            } => {
                let name = Escaped(&name);
                match (message, stopped) {
                    (Some(why), _) => {
                        eprintln!("cella: {name}: {} (status {status})", Escaped(&why))
                    }
                    (None, true) => eprintln!("cella: {name} was stopped (status {status})"),
                    (None, false) => eprintln!("cella: {name} exited with status {status}"),
                }
                Ok(None)
            }
            GuestMsg::OutOfMemory { kills, victims } => {
                let mut names: Vec<String> = victims.iter().map(|v| escape(v).into()).collect();
                let more = kills.saturating_sub(victims.len() as u64);
                if more > 0 {
                    names.push(format!("{more} more"));
                }
                eprintln!(
                    "cella: the guest ran out of memory: killed {} to free some of the VM's {} MiB; give the command more with `memory:` in cella.yaml or --memory",
                    names.join(", "),
                    self.limits.mem_mib
                );
                Ok(None)
            }
            GuestMsg::Phases { marks } => {
                for (name, us) in marks {
                    let secs = us as f64 / 1e6;
                    eprintln!("cella-stats: guest +{secs:.3} s {}", escape(&name));
                }
                Ok(None)
            }
            msg @ (GuestMsg::Exited { .. }
            | GuestMsg::Killed { .. }
            | GuestMsg::SpawnFailed { .. }) => {
                mark("workload ended");
                self.drain_rest()?;
                if let GuestMsg::SpawnFailed { message, .. } = &msg {
                    eprintln!("cella: {}", Escaped(message));
                }
                Ok(msg.exit_status())
            }
        }
    }
}

/// A message that could not be decoded, as a violation: serde's text
/// quotes what the guest sent, so it is escaped.
fn decode_violation(e: DecodeError) -> Violation {
    Violation::Decode(e.to_string())
}

/// `n` bytes from the host's random source.
fn host_random(n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: writes at most n - filled bytes into buf past `filled`.
        let got = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), n - filled, 0) };
        if got < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            filled += got as usize;
        }
    }
    Ok(buf)
}

/// Writes to a host stream; once the reader is gone, output is dropped
/// rather than stopping the workload.
fn write_stream(w: &mut impl Write, data: &[u8], open: &mut bool) {
    if *open && (w.write_all(data).is_err() || w.flush().is_err()) {
        *open = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_log_tail_is_escaped() {
        let tail = LogTail(vec![
            "ok".into(),
            "\u{1b}]0;pwned\u{7}\u{1b}[2Kcella: fine".into(),
        ]);
        let shown = tail.to_string();
        assert!(
            shown.ends_with("\n    \\e]0;pwned\\x07\\e[2Kcella: fine"),
            "{shown}"
        );
        assert!(!shown.contains('\u{1b}') && !shown.contains('\u{7}'));
    }

    #[test]
    fn the_export_stream_stops_at_its_limit() {
        let mut file = Vec::new();
        let mut io = BuildIo::new(&mut file);
        io.write(&[1; 600], 1000).expect("within the limit");
        let e = io.write(&[2; 401], 1000).expect_err("past the limit");
        assert!(matches!(e, GuestError::ExportTooLarge(1000)));
        io.write(&[3; 400], 1000).expect("still within it");
        assert_eq!(file.len(), 1000, "nothing past the limit is written");
        assert!(e.to_string().contains("1000 (limits.image in "), "{e}");
    }
}
