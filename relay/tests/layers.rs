//! The folders of `relay/src` are layers (docs/ARCHITECTURE.md): a module names only its own
//! folder and the layers below it, so no two folders import each other. This reads the sources
//! and fails naming the file and the path that points the wrong way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level module of the crate and its layer, lowest first. Modules of one rank
/// (`telemetry` and `transport`; `edge`, `cluster`, `store` and `hooks`) may not use each other either.
const RANKS: &[(&str, u32)] = &[
    ("config", 0),
    ("error", 0),
    ("clock", 0),
    ("ws", 1),
    ("protocol", 2),
    ("telemetry", 3),
    ("transport", 3),
    ("chat", 4),
    ("edge", 5),
    ("store", 5),
    ("cluster", 5),
    ("hooks", 5),
    ("ops", 6),
    ("routes", 7),
    ("server", 8),
    ("lib", 9),
    ("main", 9),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read relay/src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A line up to a `//` comment that is not inside a string literal.
fn code_part(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut in_str = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'/' if !in_str && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

/// The top-level modules a file's code (not its comments) names through `crate::`, grouped
/// imports (`crate::{a::X, b}`) included.
fn uses(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = code_part(line);
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // One line only (rustfmt keeps these short); a group that goes on is named
                // as such, so it cannot hide an import.
                let Some(end) = group.find('}') else {
                    found.push((n + 1, "{ (a crate:: group across lines)".to_string()));
                    break;
                };
                for item in group[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.push((n + 1, name));
                    }
                }
                rest = &group[end..];
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((n + 1, name));
            }
        }
    }
    found
}

#[test]
fn imports_point_down_the_layers() {
    let ranks: BTreeMap<&str, u32> = RANKS.iter().copied().collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 40, "found only {} sources", files.len());
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a component");
        let own = first.as_os_str().to_string_lossy();
        let own = own.trim_end_matches(".rs");
        let Some(&rank) = ranks.get(own) else {
            wrong.push(format!("{}: `{own}` has no layer in RANKS", rel.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        for (line, used) in uses(&text) {
            if used == own {
                continue;
            }
            match ranks.get(used.as_str()) {
                Some(&r) if r < rank => {}
                Some(_) => wrong.push(format!(
                    "{}:{line}: `{own}` (layer {rank}) uses crate::{used}, which is not below it",
                    rel.display()
                )),
                None => wrong.push(format!(
                    "{}:{line}: crate::{used} is not a module in RANKS",
                    rel.display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_a_wrong_way_import() {
    let found = uses("use crate::chat::hub::Hub; // crate::ops in a comment\n");
    assert_eq!(found, vec![(1, "chat".to_string())]);
    let grouped = uses("use crate::{ops::admin, store};\n");
    assert_eq!(
        grouped,
        vec![(1, "ops".to_string()), (1, "store".to_string())]
    );
    let after_url = uses("let u = \"http://x\"; use crate::ops::admin;\n");
    assert_eq!(
        after_url,
        vec![(1, "ops".to_string())],
        "a // inside a string is not a comment"
    );
}
