use serde_json::json;

use super::*;

fn inputs(id: &str, setup: Vec<Value>) -> Inputs {
    Inputs {
        id: id.to_owned(),
        epoch: 0,
        setup,
        build_network: false,
    }
}

fn info(digest: &str) -> ImageInfo {
    ImageInfo {
        container: "base".into(),
        id: "i".repeat(64),
        digest: digest.into(),
        size: 1,
        built_with: None,
        packages: vec!["a=1".into()],
        config: None,
    }
}

const TAR_A: &str = "1f9f0c5e6b7a1f9f0c5e6b7a1f9f0c5e6b7a1f9f0c5e6b7a1f9f0c5e6b7a1f9f";
const TAR_B: &str = "3a4b5c6d7e8f3a4b5c6d7e8f3a4b5c6d7e8f3a4b5c6d7e8f3a4b5c6d7e8f3a4b";

#[test]
fn a_lock_round_trips_through_its_json() {
    let mut lock = Lock::new();
    let now = inputs(
        &"a".repeat(64),
        vec![json!({"Tar": {"url": "./r.tar", "content": TAR_A}})],
    );
    lock.containers
        .insert("base".into(), Locked::new(&now, &info(&"d".repeat(64))));
    let bytes = serde_json::to_vec_pretty(&lock).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains("\"cella-lock\": 1"), "{text}");
    assert!(!text.contains("build-network-user"), "{text}");
    assert_eq!(parse("cella.lock", &bytes).unwrap(), lock);
    assert_eq!(lock.format_problem(), None);
}

#[test]
fn bad_locks_name_the_file_line_and_what_is_wrong() {
    let e = parse(
        "p/cella.lock",
        b"{\n  \"cella-lock\": 1,\n  \"image-format\": 3\n}",
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("p/cella.lock:3:"), "{e}");
    let e = parse(
        "cella.lock",
        br#"{"cella-lock": 1, "image-format": "x", "containers": {}, "extra": 1}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("unknown field `extra`"), "{e}");
    let e = parse("cella.lock", br#"{"cella-lock": 7, "containers": []}"#).unwrap_err();
    assert!(matches!(e, LockError::Version { .. }), "{e}");
    assert!(e.to_string().contains("a newer cella wrote it"), "{e}");
    // What messages may quote is checked to be plain text.
    let mut lock = Lock::new();
    let now = inputs(&"a".repeat(64), Vec::new());
    let mut entry = Locked::new(&now, &info(&"d".repeat(64)));
    entry.sha256 = "\u{1b}[2J".into();
    lock.containers.insert("base".into(), entry.clone());
    let bytes = serde_json::to_vec(&lock).unwrap();
    let e = parse("cella.lock", &bytes).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cella.lock: containers.base.sha256: not a sha256 (64 hex digits)"
    );
    entry.sha256 = "d".repeat(64);
    entry.packages = vec!["evil\u{1b}]0;x\u{7}=1".into()];
    lock.containers.insert("base".into(), entry);
    let e = parse("cella.lock", &serde_json::to_vec(&lock).unwrap()).unwrap_err();
    assert!(
        e.to_string()
            .contains("containers.base.packages: not a name"),
        "{e}"
    );
    // Deep nesting is refused by the parser, not the stack.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(parse("cella.lock", deep.as_bytes()).is_err());
    let other = Lock {
        image_format: "cella-steps-0/old".into(),
        ..Lock::new()
    };
    assert!(other
        .format_problem()
        .unwrap()
        .contains("cella-steps-0/old"));
}

#[test]
fn differences_name_the_step_and_field() {
    let setup = |tar: &str| {
        vec![
            json!({"Tar": {"url": "./r.tar", "path": "/", "content": tar}}),
            json!({"Sh": "make"}),
        ]
    };
    let locked = Locked::new(&inputs(&"a".repeat(64), setup(TAR_A)), &info("d"));
    assert_eq!(
        difference(&locked, &inputs(&"a".repeat(64), setup(TAR_B))),
        None
    );
    let d = difference(&locked, &inputs(&"b".repeat(64), setup(TAR_B))).unwrap();
    assert_eq!(d.step, Some(0));
    assert_eq!(
        d.what,
        "!Tar: content is 1f9f0c5e6b7a… in cella.lock, 3a4b5c6d7e8f… now"
    );
    let mut other = setup(TAR_A);
    other[1] = json!({"Cmd": ["make"]});
    let d = difference(&locked, &inputs(&"b".repeat(64), other)).unwrap();
    assert_eq!(d.step, Some(1));
    assert_eq!(
        d.what,
        "!Cmd: is {\"Sh\":\"make\"} in cella.lock, {\"Cmd\":[\"make\"]} now"
    );
    let mut longer = setup(TAR_A);
    longer.push(json!({"Text": {"/a": "b"}}));
    let d = difference(&locked, &inputs(&"b".repeat(64), longer)).unwrap();
    assert_eq!(d.step, None);
    assert!(
        d.what.contains("2 steps in cella.lock, 3 now"),
        "{}",
        d.what
    );
    let mut later = inputs(&"b".repeat(64), setup(TAR_A));
    later.epoch = 1_700_000_000;
    let d = difference(&locked, &later).unwrap();
    assert!(d
        .what
        .contains("SOURCE_DATE_EPOCH) is 0 in cella.lock, 1700000000 now"));
}

#[test]
fn package_and_tool_differences_are_short() {
    let was: Vec<String> = (0..10).map(|i| format!("p{i}=1")).collect();
    let mut now = was.clone();
    now[0] = "p0=2".into();
    assert_eq!(packages_difference(&was, &now).unwrap(), "-p0=1 +p0=2");
    assert_eq!(packages_difference(&was, &was), None);
    let many = packages_difference(&was, &[]).unwrap();
    assert!(many.ends_with("and 4 more"), "{many}");
    let tools = BuiltWith {
        cella: "0.1.0".into(),
        kernel: TAR_A.into(),
        guest_init: TAR_B.into(),
    };
    assert_eq!(tools_difference(&tools, &tools), None);
    let newer = BuiltWith {
        cella: "0.2.0".into(),
        ..tools.clone()
    };
    assert_eq!(tools_difference(&tools, &newer), None);
    let rebuilt = BuiltWith {
        kernel: TAR_B.into(),
        ..tools.clone()
    };
    assert_eq!(
        tools_difference(&tools, &rebuilt).unwrap(),
        "it was built by cella 0.1.0 with kernel sha256 1f9f0c5e6b7a… (this cella's: 3a4b5c6d7e8f…)"
    );
}
