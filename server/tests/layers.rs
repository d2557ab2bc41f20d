//! The module map holds: no import cycles between the modules of
//! `server/src` and `client/src`, and no import pointing up the layers that
//! `server/src/lib.rs` draws.
//!
//! A plain test, so that it runs wherever `cargo test` does, with no tool to
//! install: it reads the sources, collects every `crate::…`, `super::…` and
//! `self::…` path outside comments, strings and `#[cfg(test)]` items (a test
//! may reach anywhere), and builds the graph between units: the crate's
//! top-level modules, and the submodules of the ones in [`SPLIT`] (at any
//! depth: `store::redis` is split too). Then it
//! fails, naming the modules, on any cycle, and on any edge from a unit to a
//! unit of a higher layer in [`SERVER_LAYERS`] (or [`CLIENT_LAYERS`]).
//!
//! A second test holds production functions (test code excluded again)
//! under [`LONG`] lines, from `fn` to the closing brace, but for the ones
//! listed in [`LONG_ON_PURPOSE`], which README.md's Development section
//! explains.
//!
//! Run them alone with `cargo test -p floodgate-server --test layers`; set
//! `FLOODGATE_LAYERS_ROOT` to a checkout to check that one's sources instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules whose submodules are units of their own (a nested one is split
/// only if its parent is).
const SPLIT: &[&str] = &[
    "store",
    "store::redis",
    "limiter",
    "rules",
    "resilience",
    "grpc",
    "model",
    "tls",
    "xds",
];

/// The server's layers, from the bottom: a unit may import units of its own
/// layer or of a lower one (a unit not listed is an error, so a new module
/// must be placed). Within a layer the graph must still be acyclic.
const SERVER_LAYERS: &[&[&str]] = &[
    // Leaves: pure arithmetic, time, signals, the retry backoff.
    &[
        "model",
        "model::algorithm",
        "model::capacity",
        "model::failure",
        "model::quota",
        "model::unit",
        "clock",
        "shutdown",
        "backoff",
    ],
    // What a decision records and logs.
    &["metrics", "telemetry"],
    // Counters, and the rules that name them.
    &[
        "store::key",
        "store",
        "store::quota",
        "store::memory",
        "store::redis::settings",
        "store::redis::error",
        "store::redis::connection",
        "store::redis::sentinel",
        "store::redis::cluster",
        "store::redis::batch",
        "store::redis",
        "store::connecting",
    ],
    &[
        "rules::wildcard",
        "rules::yaml",
        "rules::error",
        "rules::files",
        "rules::parse",
        "rules::tree",
        "rules::load",
        "rules",
        "rules::reload",
    ],
    // Redis behind a deadline, retries, a breaker, a fallback.
    &[
        "resilience",
        "resilience::deadline",
        "resilience::retry",
        "resilience::breaker",
        "resilience::overlimit",
        "resilience::store",
    ],
    // The decision.
    &["limiter::request", "limiter"],
    // The wire: connections, then gRPC, then what serves beside it.
    &[
        "tls::files",
        "tls::server",
        "tls::client",
        "tls",
        "transport",
    ],
    &["xds::convert", "xds"],
    &["grpc::codec", "grpc::response", "grpc::status", "grpc"],
    // RLQS: the same rules and store, off the request path.
    &["rlqs"],
    &["http", "admin"],
    // Settings, the composition root, the binary's commands.
    &["config"],
    &["health", "lifecycle", "lib"],
    &["bench", "cli"],
];

/// The client's layers, from the bottom.
const CLIENT_LAYERS: &[&[&str]] = &[
    &[
        "error",
        "descriptor",
        "decision",
        "retry",
        "throttle",
        "memo",
    ],
    &["balance"],
    &["client"],
    &["layer"],
    &["lib"],
];

#[test]
fn server_modules_form_one_way_layers() {
    check(&workspace().join("server/src"), SERVER_LAYERS);
}

#[test]
fn client_modules_form_one_way_layers() {
    check(&workspace().join("client/src"), CLIENT_LAYERS);
}

/// A production function this long or longer must be listed below.
const LONG: usize = 60;

/// Production functions of [`LONG`] lines or more that stay so on purpose
/// (README.md's Development section says why), as `file: name`.
const LONG_ON_PURPOSE: &[&str] = &[
    // One flat table of every setting's default.
    "server/src/config.rs: default",
    // Mirrors capacity.lua step by step.
    "server/src/model/capacity.rs: decide",
];

#[test]
fn no_production_function_is_over_60_lines_but_the_listed_ones() {
    let root = workspace();
    let mut long = Vec::new();
    let mut still_long = BTreeSet::new();
    for dir in ["server/src", "client/src"] {
        let src = root.join(dir);
        for (_, file, code) in production_sources(&src) {
            let rel = file.strip_prefix(&src).unwrap_or(&file).display();
            for (name, line, lines) in functions(&code) {
                let id = format!("{dir}/{rel}: {name}");
                let listed = LONG_ON_PURPOSE.contains(&id.as_str());
                if lines >= LONG {
                    still_long.insert(id.clone());
                }
                if lines >= LONG && !listed {
                    long.push(format!("{dir}/{rel}:{line}: {name} ({lines} lines)"));
                }
            }
        }
    }
    // The README names these: it must stay true.
    for id in LONG_ON_PURPOSE {
        if !still_long.contains(*id) {
            long.push(format!(
                "{id} is no longer long: drop it from LONG_ON_PURPOSE and the README"
            ));
        }
    }
    assert!(
        long.is_empty(),
        "production functions of {LONG} lines or more: split them by job, or list them in \
         LONG_ON_PURPOSE and say why in README.md's Development section:\n  {}",
        long.join("\n  ")
    );
}

/// Every function with a body in `code` (as [`strip`] leaves it): its name,
/// first line and length in lines, from `fn` to the closing brace.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find("fn ") {
        let at = from + found;
        from = at + "fn ".len();
        if at > 0 && is_ident(bytes[at - 1]) {
            continue;
        }
        let rest = &code[from..];
        let name: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        // The body is the first `{` outside parentheses and brackets (a
        // `[u8; 4]` parameter has a `;`), unless a `;` ends a declaration.
        let mut depth = 0;
        let mut open = None;
        for (i, c) in rest.char_indices() {
            match c {
                '(' | '[' => depth += 1,
                ')' | ']' => depth -= 1,
                ';' if depth == 0 => break,
                '{' if depth == 0 => {
                    open = Some(from + i);
                    break;
                }
                _ => {}
            }
        }
        let Some(open) = open else {
            continue;
        };
        let end = open + matching(&code[open..]);
        let line = code[..at].matches('\n').count() + 1;
        let lines = code[at..end].matches('\n').count() + 1;
        out.push((name, line, lines));
    }
    out
}

/// This checkout, or the one `FLOODGATE_LAYERS_ROOT` names (to check
/// another branch's sources with this test).
fn workspace() -> PathBuf {
    std::env::var_os("FLOODGATE_LAYERS_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}

/// Builds the graph of the crate under `src` and asserts both rules.
fn check(src: &Path, layers: &[&[&str]]) {
    let graph = graph(src);
    let mut problems = Vec::new();
    for cycle in cycles(&graph) {
        problems.push(format!("import cycle: {cycle}"));
    }
    let rank = |unit: &str| layers.iter().position(|l| l.contains(&unit));
    for (from, edges) in &graph {
        let Some(from_rank) = rank(from) else {
            problems.push(format!(
                "{from} is in no layer: place it in the test's list"
            ));
            continue;
        };
        for (to, at) in edges {
            match rank(to) {
                None => problems.push(format!("{to} is in no layer: place it in the test's list")),
                Some(to_rank) if to_rank > from_rank => {
                    problems.push(format!("{from} imports {to}, a higher layer ({at})"))
                }
                Some(_) => {}
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(
        problems.is_empty(),
        "the module map of {} is broken:\n  {}",
        src.display(),
        problems.join("\n  ")
    );
}

/// Unit → (imported unit → one place that imports it, as `file:path`).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn graph(src: &Path) -> Graph {
    let modules: BTreeSet<Vec<String>> =
        rust_files(src).iter().map(|f| module_of(src, f)).collect();
    let mut graph = Graph::new();
    for (module, file, code) in production_sources(src) {
        if module.first().is_some_and(|m| m == "main") {
            continue;
        }
        let from = unit(&module, &modules);
        let node = graph.entry(from.clone()).or_default();
        for path in paths(&code, &module) {
            let to = unit(&path, &modules);
            if to != from {
                let at = format!(
                    "{}: {}",
                    file.strip_prefix(src).unwrap_or(&file).display(),
                    path.join("::")
                );
                node.entry(to).or_insert(at);
            }
        }
    }
    graph
}

/// Every source file under `src` but the test modules that live in files
/// of their own: its module path, its path and its code as [`strip`] leaves it.
fn production_sources(src: &Path) -> Vec<(Vec<String>, PathBuf, String)> {
    let mut excluded = BTreeSet::new();
    let mut sources = Vec::new();
    for file in rust_files(src) {
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        let module = module_of(src, &file);
        let (code, test_modules) = strip(&text);
        for name in test_modules {
            let mut m = module.clone();
            m.push(name);
            excluded.insert(m);
        }
        sources.push((module, file, code));
    }
    sources.retain(|(module, _, _)| !excluded.iter().any(|e| module.starts_with(e)));
    sources
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a readable source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// `store/redis/mod.rs` → `[store, redis]`; `lib.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("a file under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The unit a module path belongs to: `lib` for the crate root and its
/// items, the top-level module, or for a [`SPLIT`] one its submodule (and
/// so on down while the submodule is split too).
fn unit(path: &[String], modules: &BTreeSet<Vec<String>>) -> String {
    let Some(top) = path.first() else {
        return "lib".into();
    };
    if !modules.contains(&vec![top.clone()]) {
        return "lib".into();
    }
    let mut unit = vec![top.clone()];
    while SPLIT.contains(&unit.join("::").as_str())
        && let Some(sub) = path.get(unit.len())
    {
        let mut next = unit.clone();
        next.push(sub.clone());
        if !modules.contains(&next) {
            break;
        }
        unit = next;
    }
    unit.join("::")
}

/// Every module path the code names, resolved from the crate root.
fn paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let starts_word = i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':';
        let rest = &code[i..];
        let base: Option<(Vec<String>, usize)> = if !starts_word {
            None
        } else if rest.starts_with("crate::") {
            Some((Vec::new(), "crate::".len()))
        } else if rest.starts_with("self::") {
            Some((module.to_vec(), "self::".len()))
        } else if rest.starts_with("super::") {
            // `super` of a file module `a/b.rs` is `a`; of `a/b/mod.rs`, also `a`.
            let mut here = module.to_vec();
            let mut len = 0;
            while code[i + len..].starts_with("super::") {
                here.pop();
                len += "super::".len();
            }
            Some((here, len))
        } else {
            None
        };
        let Some((base, len)) = base else {
            i += 1;
            continue;
        };
        i += len;
        for tail in tails(&code[i..]) {
            let mut p = base.clone();
            p.extend(tail);
            out.push(p);
        }
    }
    out
}

/// The paths after a `crate::` (a plain path, or a `{…}` group of them).
fn tails(code: &str) -> Vec<Vec<String>> {
    if let Some(group) = code.strip_prefix('{') {
        let mut depth = 0;
        let mut end = group.len();
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    end = i;
                    break;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        let mut out = Vec::new();
        let mut depth = 0;
        let mut item = String::new();
        for c in group[..end].chars().chain([',']) {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.extend(tails(item.trim()));
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        return out;
    }
    let mut path = Vec::new();
    let mut rest = code;
    loop {
        let len = rest.bytes().take_while(|b| is_ident(*b)).count();
        if len == 0 {
            if rest.starts_with('{') {
                return tails(rest)
                    .into_iter()
                    .map(|t| path.iter().cloned().chain(t).collect())
                    .collect();
            }
            break;
        }
        path.push(rest[..len].to_owned());
        rest = &rest[len..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    vec![path]
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The code without comments, string and char literals, and `#[cfg(test)]`
/// items (their line breaks kept, so that lines keep their numbers); and the
/// names of the test modules declared in other files.
fn strip(text: &str) -> (String, Vec<String>) {
    let code = without_literals(text);
    let mut out = String::with_capacity(code.len());
    let mut tests = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        let (semi, brace) = (item.find(';'), item.find('{'));
        let end = match (semi, brace) {
            (Some(s), b) if b.is_none_or(|b| s < b) => {
                if let Some(name) = item[..s].trim().strip_prefix("mod ") {
                    tests.push(name.trim().to_owned());
                }
                s + 1
            }
            (_, Some(b)) => b + matching(&item[b..]),
            _ => item.len(),
        };
        out.extend(line_breaks(&item[..end]));
        rest = &item[end..];
    }
    out.push_str(rest);
    (out, tests)
}

/// The length of the `{…}` block that `s` starts with.
fn matching(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    s.len()
}

/// The line breaks in `s`.
fn line_breaks(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().filter(|c| *c == '\n')
}

/// Blanks out comments and the contents of string and char literals (but
/// not their line breaks).
fn without_literals(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            let mut depth = 0;
            let mut j = 0;
            while j < rest.len() {
                if rest[j..].starts_with("/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with("*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            out.extend(line_breaks(&rest[..j]));
            i += j;
        } else if let Some(len) = raw_string(rest) {
            out.push_str("\"\"");
            out.extend(line_breaks(&rest[..len]));
            i += len;
        } else if rest.starts_with('"') {
            let mut j = 1;
            while j < b.len() - i && b[i + j] != b'"' {
                j += if b[i + j] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            out.extend(line_breaks(rest.get(..j + 1).unwrap_or(rest)));
            i += j + 1;
        } else if rest.starts_with('\'') && char_literal(rest).is_some() {
            out.push_str("' '");
            i += char_literal(rest).unwrap_or(1);
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The length of a raw string literal `r"…"`, `r#"…"#` (or `br…`) at the start.
fn raw_string(s: &str) -> Option<usize> {
    let body = s.strip_prefix("br").or_else(|| s.strip_prefix('r'))?;
    let hashes = body.bytes().take_while(|b| *b == b'#').count();
    let open = &body[hashes..];
    if !open.starts_with('"') {
        return None;
    }
    let close = format!("\"{}", "#".repeat(hashes));
    let end = open[1..].find(&close)?;
    Some(s.len() - open.len() + 1 + end + close.len())
}

/// The length of a char literal (`'x'`, `'\n'`, `'\u{1F600}'`) at the start;
/// `None` for a lifetime.
fn char_literal(s: &str) -> Option<usize> {
    let body = &s[1..];
    if body.starts_with('\\') {
        return body.find('\'').map(|e| e + 2);
    }
    let c = body.chars().next()?;
    body[c.len_utf8()..]
        .starts_with('\'')
        .then_some(c.len_utf8() + 2)
}

/// Every import cycle, each once, spelled from one unit back to it with
/// the place of each import.
fn cycles(graph: &Graph) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (from, edges) in graph {
        for to in edges.keys() {
            let Some(mut cycle) = path(graph, to, from) else {
                continue;
            };
            cycle.insert(0, from.clone());
            let members: BTreeSet<String> = cycle.iter().cloned().collect();
            if !seen.insert(members) {
                continue;
            }
            let mut text = from.clone();
            for pair in cycle.windows(2) {
                let at = &graph[&pair[0]][&pair[1]];
                text.push_str(&format!(" -> {} ({at})", pair[1]));
            }
            out.push(text);
        }
    }
    out
}

/// The shortest import path from `from` to `to` (both included), if any.
fn path(graph: &Graph, from: &str, to: &str) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([from.to_owned()]);
    while let Some(node) = queue.pop_front() {
        if node == to {
            let mut path = vec![node];
            while let Some(prev) = came_from.get(path.last()?) {
                path.push(prev.clone());
            }
            path.reverse();
            return Some(path);
        }
        for next in graph.get(&node).into_iter().flat_map(BTreeMap::keys) {
            if next != from && !came_from.contains_key(next) {
                came_from.insert(next.clone(), node.clone());
                queue.push_back(next.clone());
            }
        }
    }
    None
}
