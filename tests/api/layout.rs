//! The shape the code keeps (the seams): all SQL under `store/`, no import
//! circle between top-level modules, the wiring imported only by the binary's
//! entry points, no stringly-typed errors, and every module saying what it owns.
//! Read from the source files, so a change that breaks a rule fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(&p).unwrap();
            (rel, text)
        })
        .collect()
}

/// The file's code without its `#[cfg(test)]` module (unit tests may use anything).
fn non_test(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// The top-level module a file belongs to (`store/writer.rs` → `store`).
fn top_module(rel: &str) -> String {
    rel.split('/').next().unwrap().trim_end_matches(".rs").to_string()
}

/// Top-level modules a file refers to through `crate::…`.
fn refers_to(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::b, c};`
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn no_sql_outside_the_store() {
    let offenders: Vec<String> = sources()
        .into_iter()
        .filter(|(rel, text)| !rel.starts_with("store/") && (text.contains("rusqlite") || text.contains("r2d2")))
        .map(|(rel, _)| rel)
        .collect();
    assert!(offenders.is_empty(), "SQL types outside src/store/: {offenders:?}");
}

#[test]
fn the_module_graph_has_no_circle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in sources() {
        let top = top_module(&rel);
        if top == "lib" || top == "main" {
            continue;
        }
        let deps = graph.entry(top.clone()).or_default();
        for d in refers_to(non_test(&text)) {
            if d != top {
                deps.insert(d);
            }
        }
    }
    // Every circle shows up as an edge whose target reaches back to its source.
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(m) = stack.pop() {
            if m == to {
                return true;
            }
            if seen.insert(m.clone()) {
                stack.extend(graph.get(&m).into_iter().flatten().cloned());
            }
        }
        false
    };
    let mut circles = Vec::new();
    for (m, deps) in &graph {
        for d in deps {
            if reaches(d, m) {
                circles.push(format!("{m} -> {d}"));
            }
        }
    }
    assert!(circles.is_empty(), "edges on an import circle between top-level modules: {circles:?}\ngraph: {graph:#?}");
}

#[test]
fn only_the_entry_points_import_the_wiring() {
    let offenders: Vec<String> = sources()
        .into_iter()
        .filter(|(rel, text)| {
            let top = top_module(rel);
            !matches!(top.as_str(), "startup" | "cli" | "main" | "lib") && refers_to(text).contains("startup")
        })
        .map(|(rel, _)| rel)
        .collect();
    assert!(offenders.is_empty(), "modules importing the wiring (startup): {offenders:?}");
}

#[test]
fn no_error_is_a_bare_string() {
    let mut offenders = Vec::new();
    for (rel, text) in sources() {
        for (n, line) in non_test(&text).lines().enumerate() {
            let squeezed: String = line.split_whitespace().collect::<Vec<_>>().join(" ");
            if squeezed.contains(", String>") && squeezed.contains("Result<") {
                offenders.push(format!("{rel}:{}", n + 1));
            }
        }
    }
    assert!(offenders.is_empty(), "functions that fail with a bare String: {offenders:?}");
}

#[test]
fn every_module_says_what_it_owns() {
    let silent: Vec<String> =
        sources().into_iter().filter(|(rel, text)| rel != "main.rs" && !text.starts_with("//!")).map(|(rel, _)| rel).collect();
    assert!(silent.is_empty(), "modules without a //! line: {silent:?}");
}

#[test]
fn the_store_hands_out_no_connection() {
    // A public store item whose signature names a connection, a transaction
    // or the writer's closure would let SQL leak out again; inside store/
    // such helpers are `pub(super)` or private.
    let leaky = ["Connection", "WriteTx", "Transaction", "rusqlite", "r2d2"];
    let mut offenders = Vec::new();
    for (rel, text) in sources() {
        if !rel.starts_with("store/") {
            continue;
        }
        let code = non_test(&text);
        let mut rest = code;
        while let Some(i) = rest.find("pub ") {
            let item = &rest[i..];
            let end = item.find(['{', ';', '\n']).unwrap_or(item.len());
            let signature = &item[..end];
            // Function signatures run over several lines: read them to the body.
            let signature = if signature.starts_with("pub fn") || signature.starts_with("pub async fn") {
                &item[..item.find(['{', ';']).unwrap_or(item.len())]
            } else {
                signature
            };
            let public_item = !signature.starts_with("pub mod") && !signature.starts_with("pub use");
            if public_item && leaky.iter().any(|l| signature.contains(l)) {
                offenders.push(format!("{rel}: {}", signature.split_whitespace().collect::<Vec<_>>().join(" ")));
            }
            rest = &item[4..];
        }
    }
    assert!(offenders.is_empty(), "public store items that hand out SQL access: {offenders:#?}");
}
