//! A check of `cargo xtask test`: the top-level modules of a crate's `src/` import each other
//! without a cycle, so the tree keeps the one-way flow `docs/architecture.md` draws. Reads
//! the source as text: `crate::` paths (in `use` trees and inline) and `super::` paths that
//! climb to the crate root; unit tests (`#[cfg(test)] mod tests`) may use anything.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use anyhow::{Context, Result};

/// Top-level module → the top-level modules it imports.
pub type Imports = BTreeMap<String, BTreeSet<String>>;

/// The imports between the top-level modules of the crate whose root is `src`.
pub fn imports(src: &Path) -> Result<Imports> {
    let mut graph = Imports::new();
    for file in rust_files(src)? {
        let rel = file.strip_prefix(src).expect("below src");
        let mut parts: Vec<String> = rel
            .with_extension("")
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if matches!(
            parts.last().map(String::as_str),
            Some("mod" | "main" | "lib")
        ) {
            parts.pop();
        }
        let Some(top) = parts.first().cloned() else {
            continue; // the crate root declares every module
        };
        let text = fs::read_to_string(&file).with_context(|| format!("reading {file:?}"))?;
        let used = referenced_modules(without_unit_tests(&text), parts.len());
        let known: BTreeSet<String> = used.into_iter().filter(|m| is_module(src, m)).collect();
        graph
            .entry(top.clone())
            .or_default()
            .extend(known.into_iter().filter(|m| *m != top));
    }
    Ok(graph)
}

/// Every cycle's modules (strongly connected components of more than one module).
pub fn cycles(graph: &Imports) -> Vec<BTreeSet<String>> {
    let nodes: BTreeSet<&String> = graph.keys().chain(graph.values().flatten()).collect();
    let reaches = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reaches(n))).collect();
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for n in &nodes {
        let component: BTreeSet<String> = reach[n]
            .iter()
            .filter(|m| reach.get(m).is_some_and(|back| back.contains(*n)))
            .cloned()
            .collect();
        if component.len() > 1 && !found.contains(&component) {
            found.push(component);
        }
    }
    found
}

/// The check: an error naming each cycle and the imports that make it.
pub fn check(src: &Path) -> Result<()> {
    let graph = imports(src)?;
    let found = cycles(&graph);
    if found.is_empty() {
        println!(
            "xtask: {} modules of {}, no import cycle",
            graph.len(),
            src.display()
        );
        return Ok(());
    }
    for cycle in &found {
        eprintln!("xtask: import cycle between {cycle:?}:");
        for from in cycle {
            for to in graph[from].iter().filter(|to| cycle.contains(*to)) {
                eprintln!("    {from} imports {to}");
            }
        }
    }
    anyhow::bail!("{} import cycle(s) in {}", found.len(), src.display())
}

fn rust_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {dir:?}"))? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(files)
}

fn is_module(src: &Path, name: &str) -> bool {
    src.join(format!("{name}.rs")).is_file() || src.join(name).join("mod.rs").is_file()
}

/// The text before a `#[cfg(test)] mod tests` block (by convention the file's last item).
fn without_unit_tests(text: &str) -> &str {
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        if after.starts_with("mod tests") {
            return &text[..text.len() - rest.len() + at];
        }
        rest = &rest[at + 1..];
    }
    text
}

/// The first path segment after `crate::` (each item of a `crate::{..}` group), and after
/// `super::` runs that climb out of a module `depth` levels down, outside comments.
fn referenced_modules(text: &str, depth: usize) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut at = 0;
    while let Some(i) = code[at..].find("crate::").map(|i| at + i) {
        at = i + "crate::".len();
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `$crate::`, `probe_common::crate::`...
        }
        found.extend(segments_at(&code[at..]));
    }
    at = 0;
    while let Some(i) = code[at..].find("super::").map(|i| at + i) {
        let mut rest = &code[i..];
        let mut climbs = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            climbs += 1;
            rest = r;
        }
        at = code.len() - rest.len();
        // A file `depth` levels down is the module `depth`; `super` `depth` times is the root.
        if climbs >= depth {
            found.extend(segments_at(rest));
        }
    }
    found
}

/// The first segment of a path (`attribution::x` → `attribution`), or of every item of a
/// brace group (`{a::b, c}` → `a`, `c`).
fn segments_at(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(group) = rest.trim_start().strip_prefix('{') else {
        return vec![ident(rest)];
    };
    let mut items = Vec::new();
    let (mut level, mut start) = (0usize, 0usize);
    for (i, c) in group.char_indices() {
        match c {
            '{' => level += 1,
            '}' if level == 0 => {
                items.push(ident(&group[start..i]));
                break;
            }
            '}' => level -= 1,
            ',' if level == 0 => {
                items.push(ident(&group[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    items.into_iter().filter(|s| !s.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn finds_a_cycle_through_use_trees_and_super_paths_but_not_in_unit_tests() {
        let dir = tree(&[
            ("main.rs", "mod a; mod b; mod c;"),
            ("a/mod.rs", "use crate::{b::{X, Y}, c};\n"),
            (
                "b.rs",
                "// crate::a in a comment\nfn f() { super::c::g(); }\n",
            ),
            (
                "c.rs",
                "fn g() {}\n#[cfg(test)]\nmod tests { use crate::a; }\n",
            ),
        ]);
        let graph = imports(dir.path()).unwrap();
        assert_eq!(graph["a"], BTreeSet::from(["b".into(), "c".into()]));
        assert_eq!(graph["b"], BTreeSet::from(["c".into()]));
        assert!(graph["c"].is_empty(), "unit tests may import anything");
        assert!(cycles(&graph).is_empty());
        assert!(check(dir.path()).is_ok());

        // c's code (not its tests) now imports a, through a nested module's super::super:
        // a -> c -> a and a -> b -> c -> a.
        fs::create_dir_all(dir.path().join("c")).unwrap();
        fs::rename(dir.path().join("c.rs"), dir.path().join("c/mod.rs")).unwrap();
        fs::write(dir.path().join("c/deep.rs"), "use super::super::a::Z;\n").unwrap();
        let graph = imports(dir.path()).unwrap();
        assert_eq!(
            cycles(&graph),
            [BTreeSet::from(["a".into(), "b".into(), "c".into()])],
            "{graph:?}"
        );
        let err = check(dir.path()).unwrap_err().to_string();
        assert!(err.contains("1 import cycle"), "{err}");
    }

    #[test]
    fn busyprobe_has_no_import_cycle() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../probe-user/src");
        let graph = imports(&src).unwrap();
        assert!(graph.contains_key("pipeline") && graph["pipeline"].contains("attribution"));
        assert_eq!(cycles(&graph), Vec::<BTreeSet<String>>::new());
    }
}
