//! Every flag has its environment variable (`--some-flag` reads `FLOODGATE_SOME_FLAG`), secrets stay out of
//! `--help`, and an unknown `FLOODGATE_*` variable is warned about at start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::CommandFactory as _;
use floodgate_server::cli::{Cli, env_name};

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");

/// Walks every subcommand's arguments. Excluded, and only these: `--help` and `--version` (clap's own, which
/// configure nothing), and positional arguments (they have no flag name for the rule to derive a variable from,
/// and `check CONFIG`'s path is what the command is asked about, so it is always given).
#[test]
fn every_flag_of_every_subcommand_has_its_variable() {
    fn walk(cmd: &clap::Command, path: &str, checked: &mut usize, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" || arg.is_positional() {
                continue;
            }
            let long = arg.get_long().unwrap_or_else(|| panic!("{path} {id}: a flag without a long name"));
            let want = env_name(long);
            *checked += 1;
            match arg.get_env() {
                Some(env) if env == want.as_str() => {}
                Some(env) => missing.push(format!("{path} --{long}: reads {}, not {want}", env.to_string_lossy())),
                None => missing.push(format!("{path} --{long}: no environment variable (want {want})")),
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), checked, missing);
        }
    }
    let (mut checked, mut missing) = (0, Vec::new());
    walk(&Cli::command(), "floodgate", &mut checked, &mut missing);
    assert!(missing.is_empty(), "flags without their FLOODGATE_ variable:\n{}", missing.join("\n"));
    // The walk saw the flags (serve has dozens, check three).
    assert!(checked >= 30, "only {checked} flags walked");
}

/// `FLOODGATE_REDIS` (and the cluster's node list) can hold a password: `--help` names the variable but never
/// prints its value.
#[test]
fn help_never_prints_a_redis_url_from_the_environment() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .env("FLOODGATE_REDIS", "redis://:hunter2@127.0.0.1:6379/")
        .env("FLOODGATE_REDIS_CLUSTER", "redis://:hunter3@127.0.0.1:7000/")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    assert!(help.contains("FLOODGATE_REDIS") && help.contains("FLOODGATE_REDIS_CLUSTER"), "{help}");
    assert!(!help.contains("hunter2") && !help.contains("hunter3"), "{help}");
}

/// A variable is read as its flag: `FLOODGATE_SHADOW_MODE=1` (and the other boolean spellings) turns the flag
/// on, and `check` reads `FLOODGATE_STRICT`.
#[test]
fn a_variable_sets_its_flag() {
    let config = common::write_config("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second}\n");
    let loose = Command::new(BIN).arg("check").arg(&config).env_remove("FLOODGATE_STRICT").output().unwrap();
    assert!(loose.status.success(), "{}", String::from_utf8_lossy(&loose.stderr));
    for on in ["1", "true", "yes", "on"] {
        let strict = Command::new(BIN).arg("check").arg(&config).env("FLOODGATE_STRICT", on).output().unwrap();
        let err = String::from_utf8_lossy(&strict.stderr);
        assert_eq!(strict.status.code(), Some(1), "FLOODGATE_STRICT={on}: {err}");
        assert!(err.contains("refused by --strict"), "{err}");
    }
    let off = Command::new(BIN).arg("check").arg(&config).env("FLOODGATE_STRICT", "0").output().unwrap();
    assert!(off.status.success(), "{}", String::from_utf8_lossy(&off.stderr));

    // `check --cluster` is on for the address `serve` reads from FLOODGATE_CLUSTER: the built-in limits have
    // policies cluster mode cannot decide, the cluster example has none.
    let cluster = |file: &str, value: &str| {
        Command::new(BIN).args(["check", file]).env("FLOODGATE_CLUSTER", value).output().unwrap().status.code()
    };
    assert_eq!(cluster("examples/default.yaml", "127.0.0.1:7000"), Some(1));
    assert_eq!(cluster("examples/default.yaml", "false"), Some(0));
    assert_eq!(cluster("examples/cluster.yaml", "127.0.0.1:7000"), Some(0));
}

/// An unknown `FLOODGATE_*` variable is one warning line naming it and the closest known variable.
#[test]
fn an_unknown_variable_is_warned_about_at_start() {
    let (http, grpc) = (common::free_port(), common::free_port());
    let child = Command::new(BIN)
        .args(["serve", "--http", &format!("127.0.0.1:{http}"), "--grpc", &format!("127.0.0.1:{grpc}")])
        .env_remove("FLOODGATE_CONFIG")
        .env_remove("RUST_LOG")
        .env("FLOODGATE_REDSI", "redis://127.0.0.1:1/")
        .env("FLOODGATE_NOTHING_LIKE_ANY_FLAG", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = common::KillOnDrop(child);
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let (mut typo, mut stranger) = (None, None);
    let start = Instant::now();
    while (typo.is_none() || stranger.is_none()) && start.elapsed() < Duration::from_secs(20) {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else { continue };
        if line.contains("FLOODGATE_REDSI") {
            typo = Some(line);
        } else if line.contains("FLOODGATE_NOTHING_LIKE_ANY_FLAG") {
            stranger = Some(line);
        }
    }
    let typo = typo.expect("no warning about FLOODGATE_REDSI");
    assert!(typo.contains("WARN") && typo.contains("did_you_mean=FLOODGATE_REDIS"), "{typo}");
    let stranger = stranger.expect("no warning about FLOODGATE_NOTHING_LIKE_ANY_FLAG");
    assert!(stranger.contains("WARN") && !stranger.contains("did_you_mean"), "{stranger}");
}
