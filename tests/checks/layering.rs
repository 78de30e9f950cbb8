//! The daemon's source files import each other without cycles (issue #11: `AppState` in
//! `app.rs` made eight files one import cycle), `state.rs` stays below api, worker, health,
//! telemetry's server and app, and the API edge sits on top: nothing below it (worker, hub,
//! state, health, the task domain) reaches `api/`, and the task domain names no protobuf type
//! (issue #22). Reads `src/` as text: `crate::a::b` and `super::a` paths (also inside
//! `use crate::a::{b, c}`) resolved to files; test modules are ignored.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "bin") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs")
            && p.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(p);
        }
    }
}

/// The file a module path (`["api", "status", "ApiError"]`) lives in: the longest prefix
/// that is a file.
fn resolve(parts: &[&str]) -> Option<PathBuf> {
    (1..=parts.len()).rev().find_map(|n| {
        let base = parts[..n].iter().fold(src(), |p, s| p.join(s));
        [base.with_extension("rs"), base.join("mod.rs")]
            .into_iter()
            .find(|c| c.is_file())
    })
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The module path of a source file (`src/api/convert/mod.rs` -> `["api", "convert"]`).
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// Files `text` (the source of `file`) names through `crate::` and `super::` paths.
fn imports(text: &str, file: &Path) -> BTreeSet<PathBuf> {
    // Inline test modules (`#[cfg(test)] mod tests { … }`, always last) are not the
    // daemon's structure; `#[cfg(test)] mod tests;` declarations are kept out by the walk
    // only in that their files are named tests.rs.
    let text = text
        .match_indices("#[cfg(test)]")
        .find(|(at, m)| text[at + m.len()..].trim_start().starts_with("mod tests {"))
        .map_or(text, |(at, _)| &text[..at]);
    let here = module_of(file);
    let mut out = BTreeSet::new();
    let starts = text
        .match_indices("crate::")
        .chain(text.match_indices("super::"))
        .filter(|(at, _)| !text[..*at].ends_with(|c: char| is_ident(c) || c == ':'));
    for (at, _) in starts {
        let rest = &text[at..];
        let path: String = rest
            .chars()
            .take_while(|&c| is_ident(c) || c == ':')
            .collect();
        let path = path.trim_end_matches(':');
        let mut words = path.split("::").filter(|s| !s.is_empty()).peekable();
        // The absolute prefix: `crate` is the root, each `super` one level up.
        let mut base: Vec<String> = if words.peek() == Some(&"crate") {
            words.next();
            Vec::new()
        } else {
            let mut m = here.clone();
            while words.peek() == Some(&"super") {
                words.next();
                m.pop();
            }
            m
        };
        base.extend(words.map(String::from));
        let parts: Vec<&str> = base.iter().map(String::as_str).collect();
        // `crate::a::{b, c::d}`: each item extends the prefix.
        if let Some(group) = rest[path.len()..].trim_start_matches(':').strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let item = item.split_whitespace().next().unwrap_or("");
                if item.is_empty() || item == "self" {
                    continue;
                }
                let mut full = parts.clone();
                full.extend(item.split("::"));
                out.extend(resolve(&full));
            }
        }
        if !parts.is_empty() {
            out.extend(resolve(&parts));
        }
    }
    out
}

fn graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files
        .into_iter()
        .map(|f| {
            let mut deps = imports(&std::fs::read_to_string(&f).unwrap(), &f);
            deps.remove(&f);
            (f, deps)
        })
        .collect()
}

fn rel(p: &Path) -> String {
    p.strip_prefix(src()).unwrap().display().to_string()
}

#[test]
fn no_source_file_imports_one_that_imports_it_back() {
    let g = graph();
    // Depth-first search for a back edge; report the cycle it closes.
    fn visit(
        n: &PathBuf,
        g: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        state: &mut BTreeMap<PathBuf, u8>,
        stack: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for d in g.get(n).into_iter().flatten() {
            match state.get(d) {
                Some(1) => {
                    let from = stack.iter().position(|x| x == d).unwrap();
                    return Some(stack[from..].to_vec());
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(d, g, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if !state.contains_key(n) {
            if let Some(cycle) = visit(n, &g, &mut state, &mut Vec::new()) {
                let names: Vec<String> = cycle.iter().map(|p| rel(p)).collect();
                panic!("import cycle: {}", names.join(" -> "));
            }
        }
    }
}

#[test]
fn state_sits_below_api_worker_health_and_app() {
    let g = graph();
    let state = &g[&src().join("state.rs")];
    for p in state {
        let r = rel(p);
        assert!(
            !["api", "worker", "health.rs", "app.rs"]
                .iter()
                .any(|m| r.starts_with(m)),
            "state.rs imports {r}"
        );
    }
    // The parser sees imports at all (guards against a test that passes by finding nothing).
    assert!(state.iter().any(|p| rel(p) == "store/mod.rs"), "{state:?}");
    assert!(g[&src().join("app.rs")].contains(&src().join("state.rs")));
}

/// Every file `from` reaches through imports (itself excluded).
fn reachable(g: &BTreeMap<PathBuf, BTreeSet<PathBuf>>, from: &Path) -> BTreeSet<PathBuf> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_path_buf()];
    while let Some(n) = todo.pop() {
        for d in g.get(&n).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn nothing_below_the_api_edge_reaches_api() {
    let g = graph();
    let below: Vec<&PathBuf> = g
        .keys()
        .filter(|f| {
            let r = rel(f);
            [
                "worker/",
                "task/",
                "hub.rs",
                "state.rs",
                "health.rs",
                "errors.rs",
                "datadir.rs",
            ]
            .iter()
            .any(|m| r.starts_with(m))
        })
        .collect();
    assert!(below.len() >= 10, "{below:?}");
    for f in below {
        for d in reachable(&g, f) {
            assert!(
                !rel(&d).starts_with("api/"),
                "{} reaches {} (through its imports)",
                rel(f),
                rel(&d)
            );
        }
    }
    // `super::` paths are read: the worker's files import their module root.
    assert!(g[&src().join("worker/events.rs")].contains(&src().join("worker/mod.rs")));
    assert!(g[&src().join("api/convert/settings.rs")].contains(&src().join("task/mod.rs")));
}

#[test]
fn the_task_domain_names_no_protobuf_type() {
    let mut files = Vec::new();
    rust_files(&src().join("task"), &mut files);
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for word in ["ctp_api", "pb::", "tonic"] {
            assert!(!text.contains(word), "{} names {word}", rel(&f));
        }
    }
}
