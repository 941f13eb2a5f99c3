//! Tests of `network`, `ports`, `build-network`, `!Debian` and `!Install`:
//! the decoded model and every error's message and position.

use super::tests::{load_err, project, simple, BASE};
use super::*;

#[test]
fn network_ports_and_debian_steps() {
    let yaml = "\
containers:
  deb:
    build-network: user
    setup:
    - !Debian { suite: bookworm }
    - !Install [python3-minimal, curl=7.88.1-10+deb12u5]
  old:
    setup:
    - !Debian { suite: bullseye, variant: buildd, mirror: 'http://ftp.de.debian.org/debian/' }
commands:
  web: !Command
    container: deb
    network: user
    ports: {8080: 80, 8443: 443}
    run: [python3, -m, http.server, '80']
  offline: !Command
    container: deb
    run: [true]
  pair: !Supervise
    network: user
    ports: {9000: 9000}
    children:
      a: !Command { container: deb, run: [true] }
";
    let (_dir, path) = project("cella.yaml", yaml);
    let config = load(&path, 1 << 20).unwrap();
    let deb = &config.containers["deb"];
    assert_eq!(deb.build_network, Network::User);
    assert_eq!(
        deb.setup[0].step,
        Step::Debian(DebianStep {
            suite: "bookworm".into(),
            variant: "minbase".into(),
            mirror: None,
        })
    );
    assert_eq!(
        deb.setup[1].step,
        Step::Install(vec![
            "python3-minimal".into(),
            "curl=7.88.1-10+deb12u5".into()
        ])
    );
    let old = &config.containers["old"];
    assert_eq!(old.build_network, Network::None);
    assert_eq!(
        old.setup[0].step,
        Step::Debian(DebianStep {
            suite: "bullseye".into(),
            variant: "buildd".into(),
            mirror: Some("http://ftp.de.debian.org/debian".into()),
        })
    );
    let web = simple(&config, "web");
    assert_eq!(web.network, Network::User);
    assert_eq!(
        web.ports,
        vec![
            PortMap {
                host: 8080,
                guest: 80
            },
            PortMap {
                host: 8443,
                guest: 443
            }
        ]
    );
    let offline = simple(&config, "offline");
    assert_eq!((offline.network, offline.ports.len()), (Network::None, 0));
    match &config.commands["pair"].kind {
        CommandKind::Supervise(s) => {
            assert_eq!(s.network, Network::User);
            assert_eq!(
                s.ports,
                vec![PortMap {
                    host: 9000,
                    guest: 9000
                }]
            );
        }
        other => panic!("pair is a !{}", other.tag()),
    }
}

fn command(body: &str) -> String {
    format!("{BASE}commands:\n  c: !Command\n    container: base\n    run: [true]\n{body}")
}

#[test]
fn network_errors() {
    assert_eq!(
        load_err(&command("    network: host\n")),
        "/p/cella.yaml:9:14: commands.c.network: unknown network \"host\", expected none or user"
    );
    assert_eq!(
        load_err(&command("    ports: {8080: 80}\n")),
        "/p/cella.yaml:9:12: commands.c.ports: publishing ports needs `network: user` on the same command"
    );
    assert_eq!(
        load_err(&command("    network: user\n    ports: {http: 80}\n")),
        "/p/cella.yaml:10:13: commands.c.ports.http: expected a port number from 1 to 65535, found \"http\""
    );
    assert_eq!(
        load_err(&command("    network: user\n    ports: {8080: 0}\n")),
        "/p/cella.yaml:10:19: commands.c.ports.8080: expected a port number from 1 to 65535, found \"0\""
    );
    assert_eq!(
        load_err(&format!(
            "{BASE}commands:\n  s: !Supervise\n    children:\n      a: !Command {{ container: base, run: [true], network: user }}\n"
        )),
        "/p/cella.yaml:8:51: commands.s.children.a.network: \
         set it on the !Supervise command: its children share one VM"
    );
}

fn steps(steps: &str) -> String {
    format!("containers:\n  base:\n    setup:\n{steps}")
}

#[test]
fn debian_step_errors() {
    assert_eq!(
        load_err(&steps("    - !Debian { variant: minbase }\n")),
        "/p/cella.yaml:4:7: containers.base.setup[0].suite: missing required field"
    );
    assert_eq!(
        load_err(&steps("    - !Debian { suite: Bookworm }\n")),
        "/p/cella.yaml:4:24: containers.base.setup[0].suite: \
         expected a suite name like bookworm (lowercase letters, digits, \"-\" and \".\", \
         starting with a letter or digit), found \"Bookworm\""
    );
    assert_eq!(
        load_err(&steps(
            "    - !Debian { suite: bookworm, variant: extract }\n"
        )),
        "/p/cella.yaml:4:43: containers.base.setup[0].variant: unknown variant \"extract\", \
         expected one of essential, apt, required, minbase, buildd, important, standard"
    );
    assert_eq!(
        load_err(&steps(
            "    - !Debian { suite: bookworm, mirror: ftp://x }\n"
        )),
        "/p/cella.yaml:4:42: containers.base.setup[0].mirror: \
         expected an http:// or https:// URL, found another scheme or none: \"ftp://x\""
    );
    assert_eq!(
        load_err(&steps(
            "    - !Sh true\n    - !Debian { suite: bookworm }\n"
        )),
        "/p/cella.yaml:5:7: containers.base.setup[1]: !Debian must be the first step"
    );
    assert_eq!(
        load_err(&steps("    - !Install []\n")),
        "/p/cella.yaml:4:7: containers.base.setup[0]: expected a list of packages, found an empty one"
    );
    assert_eq!(
        load_err(&steps("    - !Install [curl, -o]\n")),
        "/p/cella.yaml:4:23: containers.base.setup[0][1]: \
         expected a Debian package: NAME, NAME=VERSION or NAME/RELEASE, \
         optionally NAME:ARCH, found \"-o\""
    );
    assert_eq!(
        load_err("containers:\n  base:\n    build-network: yes\n"),
        "/p/cella.yaml:3:20: containers.base.build-network: unknown network \"yes\", expected none or user"
    );
}
