//! Checks every message the guest sends against the state of the session:
//! a guest (a root workload holding guest-init's control port, or a
//! hostile kernel) can send any message at any time, and only the ones
//! guest-init would send at that point are taken.

use guest_init::{GuestMsg, RunSpec, MAX_OOM_VICTIMS, MAX_PHASES, MAX_PHASE_NAME, MAX_VICTIM_NAME};

use crate::text::Escaped;

/// Exit statuses a process can have, and signals that can kill it.
const STATUSES: std::ops::RangeInclusive<i32> = 0..=255;
const SIGNALS: std::ops::RangeInclusive<i32> = 1..=64;

/// A message guest-init would not have sent; the text the guest chose is
/// escaped when shown.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Violation {
    #[error("Hello after the run spec went out")]
    LateHello,
    #[error("Prepared, which the host did not ask for")]
    UnaskedPrepared,
    #[error("{0} twice")]
    Repeated(&'static str),
    #[error("{0} before the run spec was sent")]
    BeforeSpec(&'static str),
    #[error("{0} before the workload started")]
    BeforeStart(&'static str),
    #[error("{0} in a run that has no {1}")]
    NotInThisRun(&'static str, &'static str),
    #[error("Step {index} in a build of {steps} steps, after step {last:?}")]
    Step {
        index: u32,
        steps: usize,
        last: Option<u32>,
    },
    #[error("exit status {0}, not in 0..=255")]
    Status(i32),
    #[error("signal {0}, not in 1..=64")]
    Signal(i32),
    #[error("ChildEnded for \"{}\", which is not a child of this run", Escaped(.0))]
    UnknownChild(String),
    #[error("ChildEnded for \"{}\" twice", Escaped(.0))]
    ChildTwice(String),
    #[error("OutOfMemory with {victims} victims for {kills} kills (at most {MAX_OOM_VICTIMS} names of {MAX_VICTIM_NAME} bytes)")]
    Victims { victims: usize, kills: u64 },
    #[error("Phases with {0} marks (at most {MAX_PHASES} names of {MAX_PHASE_NAME} bytes)")]
    Phases(usize),
    #[error("{}", Escaped(.0))]
    Decode(String),
}

/// What kind of run the guest is in, from its spec.
enum Kind {
    Run,
    Build { steps: usize },
    Supervise,
}

/// The session as far as the guest's messages go.
pub struct Protocol {
    kind: Kind,
    /// The run spec went out (the hello is answered).
    sent: bool,
    /// A [`guest_init::HostMsg::Prepare`] went out and is not answered yet.
    preparing: bool,
    /// guest-init reported the workload running.
    started: bool,
    last_step: Option<u32>,
    /// A supervised run's children, and whether each has ended.
    children: Vec<(String, bool)>,
    oom_reported: bool,
    /// The spec asked for [`GuestMsg::Phases`]; and whether they came.
    stats: bool,
    phases_reported: bool,
}

impl Protocol {
    pub fn new(spec: &RunSpec) -> Self {
        let kind = match (&spec.build, &spec.supervise) {
            (Some(build), _) => Kind::Build {
                steps: build.steps.len(),
            },
            (None, Some(_)) => Kind::Supervise,
            (None, None) => Kind::Run,
        };
        let children = spec
            .supervise
            .iter()
            .flat_map(|s| &s.children)
            .map(|c| (c.name.clone(), false))
            .collect();
        Protocol {
            kind,
            sent: false,
            preparing: false,
            started: false,
            last_step: None,
            children,
            oom_reported: false,
            stats: spec.stats,
            phases_reported: false,
        }
    }

    /// The run spec went out.
    pub fn sent(&mut self) {
        self.sent = true;
    }

    /// The host asked the guest to ready a warm snapshot.
    pub fn prepare_sent(&mut self) {
        self.preparing = true;
    }

    pub fn is_sent(&self) -> bool {
        self.sent
    }

    pub fn is_started(&self) -> bool {
        self.started
    }

    /// Takes `msg` into the session's state, or says how it breaks the protocol.
    pub fn check(&mut self, msg: &GuestMsg) -> Result<(), Violation> {
        match msg {
            GuestMsg::Hello { .. } if self.sent || self.preparing => Err(Violation::LateHello),
            GuestMsg::Prepared if self.preparing => {
                self.preparing = false;
                Ok(())
            }
            GuestMsg::Prepared => Err(Violation::UnaskedPrepared),
            GuestMsg::Hello { .. } => Ok(()),
            GuestMsg::Error { .. } => Ok(()),
            _ if !self.sent => Err(Violation::BeforeSpec(name(msg))),
            GuestMsg::Started if self.started => Err(Violation::Repeated("Started")),
            GuestMsg::Started => {
                self.started = true;
                Ok(())
            }
            GuestMsg::Step { index } => self.step(*index),
            GuestMsg::SpawnFailed { .. } => Ok(()),
            GuestMsg::Phases { .. } if !self.stats => {
                Err(Violation::NotInThisRun("Phases", "CELLA_STATS"))
            }
            GuestMsg::Phases { .. } if self.phases_reported => Err(Violation::Repeated("Phases")),
            GuestMsg::Phases { marks } => {
                let too_long = marks.iter().any(|(n, _)| n.len() > MAX_PHASE_NAME);
                if marks.len() > MAX_PHASES || too_long {
                    return Err(Violation::Phases(marks.len()));
                }
                self.phases_reported = true;
                Ok(())
            }
            _ if !self.started && !matches!(msg, GuestMsg::ChildEnded { .. }) => {
                Err(Violation::BeforeStart(name(msg)))
            }
            GuestMsg::Exited { code } if !STATUSES.contains(code) => Err(Violation::Status(*code)),
            GuestMsg::Killed { signal } if !SIGNALS.contains(signal) => {
                Err(Violation::Signal(*signal))
            }
            GuestMsg::Exited { .. } | GuestMsg::Killed { .. } => Ok(()),
            GuestMsg::ChildEnded { name, status, .. } => self.child_ended(name, *status),
            GuestMsg::OutOfMemory { .. } if self.oom_reported => {
                Err(Violation::Repeated("OutOfMemory"))
            }
            GuestMsg::OutOfMemory { kills, victims } => {
                let too_long = victims.iter().any(|v| v.len() > MAX_VICTIM_NAME);
                if victims.len() > MAX_OOM_VICTIMS || victims.len() as u64 > *kills || too_long {
                    return Err(Violation::Victims {
                        victims: victims.len(),
                        kills: *kills,
                    });
                }
                self.oom_reported = true;
                Ok(())
            }
        }
    }

    fn step(&mut self, index: u32) -> Result<(), Violation> {
        let Kind::Build { steps } = self.kind else {
            return Err(Violation::NotInThisRun("Step", "build steps"));
        };
        if index as usize >= steps || self.last_step.is_some_and(|last| index <= last) {
            return Err(Violation::Step {
                index,
                steps,
                last: self.last_step,
            });
        }
        self.last_step = Some(index);
        Ok(())
    }

    fn child_ended(&mut self, name: &str, status: i32) -> Result<(), Violation> {
        if !matches!(self.kind, Kind::Supervise) {
            return Err(Violation::NotInThisRun("ChildEnded", "children"));
        }
        if !STATUSES.contains(&status) {
            return Err(Violation::Status(status));
        }
        let mut known = false;
        for (child, ended) in &mut self.children {
            if child == name {
                known = true;
                if !*ended {
                    *ended = true;
                    return Ok(());
                }
            }
        }
        Err(match known {
            true => Violation::ChildTwice(name.to_owned()),
            false => Violation::UnknownChild(name.to_owned()),
        })
    }
}

/// The message's name, for errors.
fn name(msg: &GuestMsg) -> &'static str {
    match msg {
        GuestMsg::Hello { .. } => "Hello",
        GuestMsg::Prepared => "Prepared",
        GuestMsg::Started => "Started",
        GuestMsg::Step { .. } => "Step",
        GuestMsg::Exited { .. } => "Exited",
        GuestMsg::Killed { .. } => "Killed",
        GuestMsg::SpawnFailed { .. } => "SpawnFailed",
        GuestMsg::Error { .. } => "Error",
        GuestMsg::ChildEnded { .. } => "ChildEnded",
        GuestMsg::OutOfMemory { .. } => "OutOfMemory",
        GuestMsg::Phases { .. } => "Phases",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_init::{Build, BuildStep, ChildSpec, Supervise, SuperviseMode};

    fn spec() -> RunSpec {
        RunSpec::new(vec!["true".into()], Vec::new())
    }

    fn build(steps: usize) -> RunSpec {
        let step = BuildStep {
            banner: "step".into(),
            argv: vec!["true".into()],
            env: Vec::new(),
            cwd: "/".into(),
        };
        RunSpec {
            build: Some(Build {
                steps: vec![step; steps],
            }),
            ..spec()
        }
    }

    fn supervise(names: &[&str]) -> RunSpec {
        let child = |name: &&str| ChildSpec {
            name: name.to_string(),
            argv: vec!["true".into()],
            env: Vec::new(),
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            rootfs_device: "/dev/vda".into(),
            mounts: Vec::new(),
            read_only_root: true,
        };
        RunSpec {
            supervise: Some(Supervise {
                mode: SuperviseMode::WaitAll,
                kill_after_ms: 100,
                prefix: false,
                children: names.iter().map(child).collect(),
            }),
            ..spec()
        }
    }

    fn ended(name: &str, status: i32) -> GuestMsg {
        GuestMsg::ChildEnded {
            name: name.into(),
            status,
            stopped: false,
            message: None,
        }
    }

    fn oom(kills: u64, victims: &[&str]) -> GuestMsg {
        GuestMsg::OutOfMemory {
            kills,
            victims: victims.iter().map(|v| v.to_string()).collect(),
        }
    }

    /// A session whose spec went out and whose workload started.
    fn running(spec: &RunSpec) -> Protocol {
        let mut p = Protocol::new(spec);
        p.check(&GuestMsg::Hello { version: 6 }).expect("hello");
        p.sent();
        p.check(&GuestMsg::Started).expect("started");
        p
    }

    #[test]
    fn phases_only_when_asked_once_and_bounded() {
        let phases = |n: usize, len: usize| GuestMsg::Phases {
            marks: vec![("x".repeat(len), 1); n],
        };
        let mut p = running(&spec());
        assert_eq!(
            p.check(&phases(1, 4)),
            Err(Violation::NotInThisRun("Phases", "CELLA_STATS"))
        );
        let asked = RunSpec {
            stats: true,
            ..spec()
        };
        let mut p = running(&asked);
        assert_eq!(
            p.check(&phases(MAX_PHASES + 1, 4)),
            Err(Violation::Phases(MAX_PHASES + 1))
        );
        assert!(p.check(&phases(1, MAX_PHASE_NAME + 1)).is_err());
        p.check(&phases(MAX_PHASES, MAX_PHASE_NAME))
            .expect("phases");
        assert_eq!(p.check(&phases(1, 4)), Err(Violation::Repeated("Phases")));
        // Before the spec went out, as any other message.
        let mut early = Protocol::new(&asked);
        assert!(early.check(&phases(1, 4)).is_err());
    }

    #[test]
    fn a_plain_run_in_order_is_accepted() {
        let mut p = Protocol::new(&spec());
        assert!(!p.is_sent());
        p.check(&GuestMsg::Hello { version: 6 }).expect("hello");
        p.sent();
        p.check(&GuestMsg::Started).expect("started");
        assert!(p.is_started());
        p.check(&oom(40, &["dd", "sh"])).expect("oom");
        p.check(&GuestMsg::Exited { code: 255 }).expect("exited");
        running(&spec())
            .check(&GuestMsg::Killed { signal: 64 })
            .expect("killed");
    }

    #[test]
    fn prepared_answers_one_prepare() {
        let mut p = Protocol::new(&spec());
        let prepared = GuestMsg::Prepared;
        assert_eq!(p.check(&prepared), Err(Violation::UnaskedPrepared));
        p.check(&GuestMsg::Hello { version: 7 }).expect("hello");
        p.prepare_sent();
        let hello = GuestMsg::Hello { version: 7 };
        assert_eq!(p.check(&hello), Err(Violation::LateHello));
        p.check(&prepared).expect("asked for");
        assert_eq!(p.check(&prepared), Err(Violation::UnaskedPrepared));
        p.sent();
        assert_eq!(p.check(&prepared), Err(Violation::UnaskedPrepared));
    }

    #[test]
    fn hello_and_started_come_once_and_in_order() {
        let mut p = Protocol::new(&spec());
        let started = GuestMsg::Started;
        assert_eq!(p.check(&started), Err(Violation::BeforeSpec("Started")));
        assert_eq!(
            p.check(&GuestMsg::Exited { code: 0 }),
            Err(Violation::BeforeSpec("Exited"))
        );
        p.sent();
        let hello = GuestMsg::Hello { version: 6 };
        assert_eq!(p.check(&hello), Err(Violation::LateHello));
        assert_eq!(
            p.check(&GuestMsg::Exited { code: 0 }),
            Err(Violation::BeforeStart("Exited"))
        );
        assert_eq!(
            p.check(&oom(1, &["x"])),
            Err(Violation::BeforeStart("OutOfMemory"))
        );
        p.check(&started).expect("started");
        assert_eq!(p.check(&started), Err(Violation::Repeated("Started")));
        // guest-init's own failure may come at any point.
        let error = GuestMsg::Error {
            message: "x".into(),
        };
        p.check(&error).expect("error");
        Protocol::new(&spec()).check(&error).expect("error first");
    }

    #[test]
    fn statuses_and_signals_are_in_range() {
        for code in [-1, 256, 999, i32::MIN] {
            assert_eq!(
                running(&spec()).check(&GuestMsg::Exited { code }),
                Err(Violation::Status(code))
            );
        }
        for signal in [0, 65, -9] {
            assert_eq!(
                running(&spec()).check(&GuestMsg::Killed { signal }),
                Err(Violation::Signal(signal))
            );
        }
    }

    #[test]
    fn steps_only_in_a_build_in_range_and_in_order() {
        let step = |index| GuestMsg::Step { index };
        assert_eq!(
            running(&spec()).check(&step(0)),
            Err(Violation::NotInThisRun("Step", "build steps"))
        );
        let mut p = Protocol::new(&build(3));
        assert_eq!(p.check(&step(0)), Err(Violation::BeforeSpec("Step")));
        p.sent();
        p.check(&step(0)).expect("step 0 before Started");
        p.check(&GuestMsg::Started).expect("started");
        p.check(&step(2)).expect("step 2");
        assert!(p.check(&step(2)).is_err(), "a step twice");
        assert!(p.check(&step(1)).is_err(), "a step back");
        assert!(running(&build(3)).check(&step(3)).is_err(), "past the end");
        assert!(running(&build(3)).check(&step(u32::MAX)).is_err());
    }

    #[test]
    fn children_end_once_each_and_only_in_a_supervised_run() {
        assert_eq!(
            running(&spec()).check(&ended("db", 0)),
            Err(Violation::NotInThisRun("ChildEnded", "children"))
        );
        let group = supervise(&["db", "web"]);
        let mut p = Protocol::new(&group);
        p.sent();
        // A child that cannot start is reported before Started.
        p.check(&ended("db", 127)).expect("db");
        p.check(&GuestMsg::Started).expect("started");
        assert_eq!(
            p.check(&ended("db", 0)),
            Err(Violation::ChildTwice("db".into()))
        );
        assert_eq!(
            p.check(&ended("\u{1b}]0;x\u{7}", 0)),
            Err(Violation::UnknownChild("\u{1b}]0;x\u{7}".into()))
        );
        assert_eq!(p.check(&ended("web", 300)), Err(Violation::Status(300)));
        p.check(&ended("web", 143)).expect("web");
        p.check(&GuestMsg::Exited { code: 0 }).expect("exited");
    }

    #[test]
    fn one_bounded_out_of_memory_report() {
        let names: Vec<String> = (0..=MAX_OOM_VICTIMS).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        assert!(running(&spec()).check(&oom(1000, &refs)).is_err());
        assert!(running(&spec()).check(&oom(1, &["a", "b"])).is_err());
        let long = "x".repeat(MAX_VICTIM_NAME + 1);
        assert!(running(&spec()).check(&oom(1, &[&long])).is_err());
        let mut p = running(&spec());
        p.check(&oom(1000, &refs[..MAX_OOM_VICTIMS])).expect("oom");
        assert_eq!(
            p.check(&oom(1, &["x"])),
            Err(Violation::Repeated("OutOfMemory"))
        );
    }

    #[test]
    fn guest_text_in_violations_is_escaped() {
        let shown = Violation::UnknownChild("\u{1b}]0;pwned\u{7}".into()).to_string();
        assert!(!shown.contains('\u{1b}') && !shown.contains('\u{7}'));
        assert!(shown.contains("\\e]0;pwned\\x07"), "{shown}");
        let shown = Violation::Decode("unknown variant `\u{1b}[2K`".into()).to_string();
        assert!(!shown.contains('\u{1b}'), "{shown}");
    }
}
