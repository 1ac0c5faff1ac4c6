//! A check that the library's top-level modules import each other without a
//! cycle (issue 11): it reads every `crate::<module>` path in `src/` (code,
//! not comments) and fails naming the modules of any cycle.
//! `cargo test --release --lib module_graph -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level module each library source file belongs to, with its text.
fn sources(src: &Path) -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    files
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(src).unwrap();
            let first = rel.components().next()?.as_os_str().to_str()?.to_string();
            let module = first.strip_suffix(".rs").unwrap_or(&first).to_string();
            // The binary (main.rs, cli/) uses the library; it is not part of its
            // graph. Test-only files (`tests.rs`) may use anything.
            if ["main", "lib", "cli"].contains(&module.as_str())
                || p.file_name().is_some_and(|n| n == "tests.rs")
            {
                return None;
            }
            Some((module, std::fs::read_to_string(&p).unwrap()))
        })
        .collect()
}

/// module -> the modules it names through `crate::`.
pub fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = sources(src);
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> =
        modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for (module, text) in &files {
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let name: String =
                    rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if name != *module && modules.contains(&name) {
                    g.get_mut(module).unwrap().insert(name);
                }
            }
        }
    }
    g
}

/// The cycles of `g` (strongly connected components of more than one module).
pub fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Two modules are in one cycle when each reaches the other.
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            for n in &g[&m] {
                if seen.insert(n.clone()) {
                    todo.push(n.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> = g.keys().map(|m| (m, reach(m))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for m in g.keys() {
        if done.contains(m) || !reaches[m].contains(m) {
            continue;
        }
        let scc: Vec<String> = g
            .keys()
            .filter(|n| reaches[m].contains(*n) && reaches[*n].contains(m))
            .cloned()
            .collect();
        done.extend(scc.iter().cloned());
        out.push(scc);
    }
    out
}

#[test]
fn no_module_cycles() {
    let g = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    for (m, deps) in &g {
        println!("{m:>16} -> {}", deps.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    let found = cycles(&g);
    assert!(
        found.is_empty(),
        "module cycles (each list imports itself through the others): {found:?}"
    );
}

#[test]
fn a_cycle_is_found() {
    let g: BTreeMap<String, BTreeSet<String>> =
        [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec!["a"])]
            .into_iter()
            .map(|(m, d)| (m.to_string(), d.into_iter().map(String::from).collect()))
            .collect();
    assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
}
