//! Tests of vagga's language package steps: what each stands for, the
//! config steps' effect, and what is refused.

use std::collections::BTreeMap;

use super::tests::{input_err, load_err, load_ok, project};
use super::*;

fn steps(steps: &str) -> String {
    format!("containers:\n  base:\n    setup:\n{steps}")
}

fn cache(pairs: &[(&str, &str)]) -> Step {
    Step::CacheDirs(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn script(step: &Step) -> &str {
    match step {
        Step::Package { script, .. } => script,
        other => panic!("{other:?}"),
    }
}

#[test]
fn py3_install_stands_for_install_cache_and_pip() {
    let config = load_ok(&steps(
        "    - !Py3Install [flask==3.0, 'git+https://e.org/x.git#egg=x']\n    \
         - !PipConfig { dependencies: true, index-urls: ['https://a.example/simple', \
           'https://b.example/simple'], cache-wheels: false, python-exe: python3.11 }\n    \
         - !Py3Install [\"it's\"]\n",
    ));
    let setup: Vec<&Step> = config.containers["base"]
        .setup
        .iter()
        .map(|s| &s.step)
        .collect();
    assert_eq!(setup.len(), 5, "{setup:#?}");
    assert_eq!(
        *setup[0],
        Step::Install(vec!["python3".into(), "python3-pip".into()])
    );
    assert_eq!(*setup[1], cache(&[("/tmp/pip-cache", "pip-cache")]));
    assert_eq!(setup[2].tag(), "Py3Install");
    assert_eq!(
        script(setup[2]),
        "export PIP_CACHE_DIR=/tmp/pip-cache PIP_BREAK_SYSTEM_PACKAGES=1\n'python3' -m pip \
         install --no-input --disable-pip-version-check --root-user-action=ignore --no-deps \
         'flask==3.0' 'git+https://e.org/x.git#egg=x'"
    );
    // Python is installed once; the new cache mapping is added.
    assert_eq!(
        *setup[3],
        cache(&[
            ("/tmp/pip-cache/http", "pip-cache-http"),
            ("/tmp/pip-cache/http-v2", "pip-cache-http-v2")
        ])
    );
    assert_eq!(
        script(setup[4]),
        "export PIP_CACHE_DIR=/tmp/pip-cache PIP_BREAK_SYSTEM_PACKAGES=1\n'python3.11' -m pip \
         install --no-input --disable-pip-version-check --root-user-action=ignore \
         --index-url 'https://a.example/simple' --extra-index-url 'https://b.example/simple' \
         'it'\\''s'"
    );
}

#[test]
fn requirements_and_dependencies_files_join_the_image_id() {
    let (dir, path) = project(
        "vagga.yaml",
        &steps(
            "    - !PipConfig { install-python: false }\n    \
             - !Py3Requirements src/main.rs\n    \
             - !NpmDependencies { file: Cargo.lock, dev: false, peer: true }\n    \
             - !GemBundle { gemfile: src/main.rs, without: [dev, test], trust_policy: HighSecurity }\n    \
             - !GemConfig { install_ruby: false, gem_exe: /usr/bin/gem3 }\n    \
             - !GemInstall [rake]\n",
        ),
    );
    let config = load(&path, 1 << 20).unwrap();
    drop(dir);
    let setup: Vec<&Step> = config.containers["base"]
        .setup
        .iter()
        .map(|s| &s.step)
        .collect();
    let depends = |s: &Step| match s {
        Step::Depends { rel, .. } => rel.display().to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(depends(setup[0]), "src/main.rs");
    assert_eq!(*setup[1], cache(&[("/tmp/pip-cache", "pip-cache")]));
    assert!(script(setup[2]).ends_with("--no-deps -r '/work/src/main.rs'"));
    assert_eq!(depends(setup[3]), "Cargo.lock");
    assert_eq!(
        *setup[4],
        Step::Install(vec!["nodejs".into(), "npm".into()])
    );
    let npm = script(setup[6]);
    assert!(
        npm.contains("'/work/Cargo.lock' dependencies peerDependencies bundledDependencies bundleDependencies > /tmp/.cella-npm-deps\n"),
        "{npm}"
    );
    assert!(
        npm.ends_with("xargs -0 -r 'npm' install --global --prefix /usr --cache /tmp/npm-cache --no-audit --no-fund --update-notifier=false"),
        "{npm}"
    );
    assert_eq!(depends(setup[7]), "src/main.rs");
    assert_eq!(
        *setup[8],
        Step::Install(vec!["ruby".into(), "bundler".into()])
    );
    assert_eq!(
        script(setup[9]),
        "cd '/work/src'\nbundle install --system --binstubs /usr/local/bin --gemfile \
         '/work/src/main.rs' --without 'dev:test' --trust-policy HighSecurity"
    );
    // Ruby was installed by the bundle step; the config turns it off anyway.
    assert_eq!(
        script(setup[10]),
        "'/usr/bin/gem3' install --bindir /usr/local/bin --no-document 'rake'"
    );
    assert_eq!(setup.len(), 11, "{setup:#?}");
}

#[test]
fn language_steps_refuse_options_and_python_2() {
    for (step, want) in [
        (
            "!Py3Install ['--index-url=https://evil.example/simple']",
            "containers.base.setup[0][0]: expected a package, found the option",
        ),
        (
            "!Py3Install []",
            "expected a list of packages, found an empty one",
        ),
        (
            "!NpmInstall [\"a\\nb\"]",
            "containers.base.setup[0][0]: expected a package, found control characters",
        ),
        (
            "!PipConfig { index-urls: [-x] }",
            "containers.base.setup[0].index-urls[0]: expected a package, found the option",
        ),
        (
            "!PipConfig { python-exe: 'python3; touch /x' }",
            "containers.base.setup[0].python-exe: expected a program's name",
        ),
        ("!PipConfig { pip: 1 }", "unknown field"),
        (
            "!GemBundle { trust_policy: NoSecurity }",
            "expected LowSecurity, MediumSecurity or HighSecurity",
        ),
        (
            "!Py2Install [x]",
            "Debian 12 has no Python 2: use `!Py3Install`",
        ),
        ("!Py3Requirements ../x.txt", "containers.base.setup[0]"),
    ] {
        let err = load_err(&steps(&format!("    - {step}\n")));
        assert!(err.contains(want), "{step}: {err}");
        assert!(err.starts_with("/p/cella.yaml:4:"), "{step}: {err}");
    }
    // A missing requirements file fails the build, not the listing.
    let err = input_err(&steps("    - !Py3Requirements requirements.txt\n"));
    assert!(err.contains("requirements.txt"), "{err}");
}
