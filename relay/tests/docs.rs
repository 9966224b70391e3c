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
    use relay::protocol::{CloseCode, ErrorCode};
    let protocol = read("docs/PROTOCOL.md");
    for code in ErrorCode::ALL {
        assert!(
            protocol.contains(&format!("| `{}` |", code.as_str())),
            "{code:?}"
        );
    }
    for close in CloseCode::ALL {
        assert!(
            protocol.contains(&format!("| {} |", close.code())),
            "{close:?}"
        );
    }
}

/// Every command and event section (`### \`name\``) of PROTOCOL.md shows at least one JSON
/// example, and the error table has an example message for every code.
#[test]
fn protocol_document_has_an_example_for_every_command_event_and_error() {
    use relay::protocol::ErrorCode;
    let protocol = read("docs/PROTOCOL.md");
    let mut sections = protocol.split("\n### ").skip(1);
    let mut named = 0;
    for section in sections.by_ref() {
        let (title, body) = section.split_once('\n').unwrap();
        if !title.starts_with('`') {
            continue;
        }
        named += 1;
        let body = body.split("\n## ").next().unwrap();
        assert!(
            body.contains("```json\n{"),
            "no JSON example under ### {title}"
        );
    }
    assert!(named >= 16, "found only {named} sections");
    for (kind, heading) in [
        ("history", "Client to server"),
        ("history", "Server to client"),
        ("read", "Client to server"),
        ("read", "Server to client"),
    ] {
        let part = protocol.split(&format!("## {heading}\n")).nth(1).unwrap();
        let part = part.split("\n## ").next().unwrap();
        assert!(
            part.contains(&format!("### `{kind}`")),
            "{kind} under {heading}"
        );
    }
    for code in ErrorCode::ALL {
        let row = protocol
            .lines()
            .find(|line| line.starts_with(&format!("| `{}` |", code.as_str())))
            .unwrap();
        let example = row.trim_end_matches('|').rsplit('|').next().unwrap().trim();
        assert!(
            example.starts_with('`') && example.len() > 2,
            "{code:?} has no example message: {row}"
        );
    }
}
