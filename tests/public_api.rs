//! The public surface is deliberate: the crate root's items (src/lib.rs) and the API's
//! public items (src/api/) are listed in tests/public_api.txt, and this test fails when they
//! change without the list. A deliberate change: rerun with SOFTPROMPT_BLESS=1 and commit the
//! list with it. Everything else is `pub(crate)` or behind `softprompt::internals`.

use std::path::Path;

/// `pub` items of one file: `fn`, `struct` (and its public fields), `enum`, `trait`, `type`,
/// `const`, `mod`, `use` (each name of a `pub use` list), named by their `impl` block for
/// methods.
fn public_items(file: &str, text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut impl_of: Option<String> = None;
    let mut in_use: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(prefix) = in_use.take() {
            // a `pub use a::{...}` list spread over lines
            let done = t.contains("};");
            for name in t.trim_end_matches("};").split(',').map(str::trim) {
                if !name.is_empty() {
                    items.push(format!("{file}: use {prefix}{name}"));
                }
            }
            if !done {
                in_use = Some(prefix);
            }
            continue;
        }
        if line.starts_with("impl") || line.starts_with("pub struct") {
            impl_of = Some(t.trim_end_matches('{').trim().to_string());
        } else if line.starts_with('}') {
            impl_of = None;
        }
        let Some(rest) = t.strip_prefix("pub ") else {
            continue;
        };
        if let Some(list) = rest.strip_prefix("use ") {
            match list.split_once('{') {
                Some((prefix, names)) if !names.contains('}') => {
                    in_use = Some(prefix.to_string());
                    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                        items.push(format!("{file}: use {prefix}{name}"));
                    }
                }
                _ => items.push(format!("{file}: use {}", list.trim_end_matches(';'))),
            }
            continue;
        }
        // a struct's public field: `pub name: Type,`
        if let (Some(owner), Some((name, _))) = (&impl_of, rest.split_once(": ")) {
            if owner.starts_with("pub struct")
                && name.chars().all(|c| c.is_alphanumeric() || c == '_')
            {
                items.push(format!("{file}: {owner} . {name}"));
                continue;
            }
        }
        let kinds = [
            "fn ", "struct ", "enum ", "trait ", "type ", "const ", "mod ",
        ];
        if let Some(kind) = kinds.iter().find(|k| rest.starts_with(*k)) {
            let name: String = rest[kind.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let owner = match (&impl_of, line.starts_with("    ")) {
                (Some(i), true) => format!("{i} :: "),
                _ => String::new(),
            };
            items.push(format!("{file}: {owner}{}{name}", kind));
        }
    }
    items
}

#[test]
fn public_surface_is_the_listed_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec!["src/lib.rs".to_string()];
    let mut api: Vec<String> = std::fs::read_dir(root.join("src/api"))
        .unwrap()
        .map(|e| format!("src/api/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    api.sort();
    files.extend(api);
    let mut got = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        got.extend(public_items(f, &text));
    }
    let got = got.join("\n") + "\n";
    let list = root.join("tests/public_api.txt");
    if std::env::var_os("SOFTPROMPT_BLESS").is_some() {
        std::fs::write(&list, &got).unwrap();
    }
    let want = std::fs::read_to_string(&list).unwrap_or_default();
    if got != want {
        let (g, w): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
        let added: Vec<&&str> = g.iter().filter(|l| !w.contains(l)).collect();
        let removed: Vec<&&str> = w.iter().filter(|l| !g.contains(l)).collect();
        panic!(
            "the public surface changed: added {added:#?}, removed {removed:#?}\n\
             if deliberate, rerun with SOFTPROMPT_BLESS=1 and commit tests/public_api.txt"
        );
    }
    // the crate root exposes the API, the prelude and `internals`, no other module
    let mods: Vec<&str> = got
        .lines()
        .filter(|l| l.starts_with("src/lib.rs: mod "))
        .collect();
    assert_eq!(
        mods,
        ["src/lib.rs: mod internals", "src/lib.rs: mod prelude"]
    );
}

/// The server is built over the public API only (ARCHITECTURE.md, "server"): no file of
/// `src/serve/` (nor `prediction_json.rs`, which it shares with `predict`) names
/// `softprompt::internals`, whose items make no promise. `registry.rs` reached into
/// `internals::fsutil` for its name check.
#[test]
fn serve_uses_the_public_api_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(root.join("src/serve"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.push(root.join("src/prediction_json.rs"));
    assert!(files.len() > 5, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let at = text.lines().position(|l| l.contains("internals"));
        assert!(
            at.is_none(),
            "{}:{}: the server uses softprompt's public API only",
            f.display(),
            at.unwrap_or(0) + 1
        );
    }
}
