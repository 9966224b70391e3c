//! The documentation stays true to the code: the README's configuration table lists exactly
//! the flags `relay --help` shows, and PROTOCOL.md names every error and close code.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on anything unexpected"
)]

use std::collections::BTreeSet;

use clap::CommandFactory;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn readme_configuration_table_matches_the_flags() {
    let readme = read("README.md");
    let documented: BTreeSet<String> = readme
        .lines()
        .filter_map(|line| line.strip_prefix("| `--"))
        .map(|rest| rest.split('`').next().unwrap().to_owned())
        .collect();
    let command = relay::Config::command();
    let actual: BTreeSet<String> = command
        .get_arguments()
        .filter_map(|arg| arg.get_long().map(str::to_owned))
        .filter(|long| long != "help" && long != "version")
        .collect();
    assert_eq!(documented, actual, "README table vs relay --help");
    for arg in command
        .get_arguments()
        .filter(|a| a.get_long().is_some_and(|l| l != "help" && l != "version"))
    {
        let env = arg.get_env().unwrap().to_str().unwrap();
        assert!(env.starts_with("RELAY_"), "{env}");
        assert!(readme.contains(&format!("`{env}`")), "README names {env}");
    }
}

#[test]
fn protocol_document_names_every_code() {
    use relay::protocol::ErrorCode::*;
    let protocol = read("docs/PROTOCOL.md");
    for code in [
        InvalidJson,
        MissingField,
        UnknownType,
        InvalidRoom,
        InvalidUsername,
        NotJoined,
        TooManyRooms,
        TextTooLong,
        EmptyText,
        BinaryNotSupported,
        ServerBusy,
    ] {
        assert!(
            protocol.contains(&format!("| `{}` |", code.as_str())),
            "{code:?}"
        );
    }
    use relay::protocol::CloseCode;
    for close in [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::Protocol,
        CloseCode::InvalidPayload,
        CloseCode::TooBig,
        CloseCode::HeartbeatTimeout,
        CloseCode::SlowConsumer,
    ] {
        assert!(
            protocol.contains(&format!("| {} |", close.code())),
            "{close:?}"
        );
    }
}
