//! A test that keeps the engine's modules in layers: the `use crate::…` paths of its files
//! must not make a circle between top-level modules, sources and sinks must not import each
//! other, and one connector must not import another (shared code lives in its own module).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every file under `dir`, with its path relative to `root` (`sinks/kafka/mod.rs`).
fn files(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("read engine/src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path
                .strip_prefix(root)
                .expect("under src")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).expect("read a source file");
            out.push((relative, text));
        }
    }
}

/// The modules a file names through `crate::a::b…`, as `a` and `a::b` (`b` only if it is a
/// module).
fn named(text: &str) -> BTreeSet<(String, Option<String>)> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let mut parts = rest
            .split("::")
            .map(|p| p.split(|c: char| !(c.is_alphanumeric() || c == '_')).next());
        if let Some(Some(top)) = parts.next() {
            // (A module's name is lower case; `sources::TableFilter` names a type.)
            let second = parts
                .next()
                .flatten()
                .filter(|p| p.starts_with(|c: char| c.is_ascii_lowercase()))
                .map(str::to_owned);
            out.insert((top.to_owned(), second));
        }
    }
    out
}

/// `sinks/kafka/mod.rs` → (`sinks`, Some(`kafka`)); `runtime.rs` → (`runtime`, None).
fn module_of(file: &str) -> (String, Option<String>) {
    let parts: Vec<&str> = file.trim_end_matches(".rs").split('/').collect();
    let second = match parts.get(1) {
        Some(&"mod") | None => None,
        Some(name) => Some((*name).to_owned()),
    };
    (parts[0].to_owned(), second)
}

#[test]
fn modules_form_layers_and_connectors_stand_alone() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = Vec::new();
    files(&root, &root, &mut sources);
    let modules: BTreeSet<String> = sources.iter().map(|(f, _)| module_of(f).0).collect();
    assert!(
        modules.contains("sinks") && modules.contains("sources"),
        "{modules:?}"
    );
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (file, text) in &sources {
        if file == "module_graph.rs" {
            continue;
        }
        let (top, sub) = module_of(file);
        for (target, target_sub) in named(text) {
            if !modules.contains(&target) {
                problems.push(format!("{file}: `crate::{target}` is not a module path"));
                continue;
            }
            if target != top {
                edges.entry(top.clone()).or_default().insert(target.clone());
            }
            let connector_folder = matches!(top.as_str(), "sources" | "sinks")
                && sub.as_deref().is_some_and(|s| s != "outputs");
            if connector_folder && target == top && target_sub.is_some() && target_sub != sub {
                problems.push(format!(
                    "{file}: connector `{top}::{}` imports `{target}::{}`",
                    sub.as_deref().unwrap_or_default(),
                    target_sub.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    for (a, b) in [("sources", "sinks"), ("sinks", "sources")] {
        if edges.get(a).is_some_and(|e| e.contains(b)) {
            problems.push(format!("`{a}` imports `{b}`"));
        }
    }
    // A circle between top-level modules: a depth-first search finds a back edge.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        problems: &mut Vec<String>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(start) = path.iter().position(|p| p == node) {
            problems.push(format!(
                "import circle: {} → {node}",
                path[start..].join(" → ")
            ));
            return;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, path, done, problems);
        }
        path.pop();
        done.insert(node.to_owned());
    }
    let mut done = BTreeSet::new();
    for module in &modules {
        visit(module, &edges, &mut Vec::new(), &mut done, &mut problems);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
