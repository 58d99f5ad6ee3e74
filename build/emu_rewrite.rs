//! The emulator's build step, ported from `kernels/emu/rewrite.py` (the reference; its
//! `tests/test_rewrite.py` cases are repeated in `src/cuda/emu_rewrite_tests.rs`).
//!
//! 1. `rewrite`: every `__shared__` declaration becomes an `EMU_SHARED`/`EMU_EXTERN_SHARED`
//!    macro call on the same line, so each block gets fresh, poisoned shared memory.
//! 2. `kernel_names`: the `extern "C" __global__` kernels of a file.
//! 3. `wrapper`: the C++ translation unit that compiles one kernel file for the emulator and
//!    exports `emu_launch_<kernel>` for each of its kernels.
//!
//! Used by build.rs and by the crate's unit tests, so it depends on `regex` alone.

use regex::Regex;
use std::sync::OnceLock;

const FORM: &str =
    "[extern] __shared__ [__align__(N)] TYPE NAME[DIM]...;  (one declaration per line)";

struct Patterns {
    shared: Regex,
    pragma_unroll: Regex,
    declaration: Regex,
    align: Regex,
    kernel: Regex,
    comment: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        shared: Regex::new(r"\b__shared__\b").expect("valid regex"),
        // g++ warns about `#pragma unroll [N]` (and -Wunknown-pragmas cannot be silenced by a
        // diagnostic pragma before GCC 13), so it becomes a comment.
        pragma_unroll: Regex::new(r"^\s*#\s*pragma\s+unroll\b").expect("valid regex"),
        declaration: Regex::new(concat!(
            r"^(?P<indent>\s*)(?P<extern>extern\s+)?(?P<qualifiers>(?:(?:static|volatile)\s+)*)",
            r"__shared__\s+(?P<type>(?:[^;=\[\],<>]|<[^;=\[\]<>]*>)*?)\s*\b(?P<name>[A-Za-z_]\w*)\s*",
            r"(?P<dims>(?:\[[^\[\];]*\]\s*)*);(?P<rest>.*)$"
        ))
        .expect("valid regex"),
        align: Regex::new(r"__align__\s*\(\s*(\d+)\s*\)").expect("valid regex"),
        kernel: Regex::new(concat!(
            r#"extern\s+"C"\s+__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+"#,
            r"(?:__launch_bounds__\s*\([^)]*\)\s*)?([A-Za-z_]\w*)\s*\("
        ))
        .expect("valid regex"),
        comment: Regex::new(r"(?s)//[^\n]*|/\*.*?\*/").expect("valid regex"),
    })
}

/// `line` (without its newline) with its `__shared__` declaration rewritten, or commented
/// out if it is a `#pragma unroll`; `location` ("file:line") names it in errors.
pub fn rewrite_line(line: &str, location: &str) -> Result<String, String> {
    let p = patterns();
    let (code, comment) = match line.find("//") {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, ""),
    };
    if p.pragma_unroll.is_match(code) {
        return Ok(format!("//{line}"));
    }
    if !p.shared.is_match(code) {
        return Ok(line.to_string());
    }
    let m = p.declaration.captures(code).ok_or_else(|| {
        format!("{location}: cannot rewrite this __shared__ declaration; write {FORM}")
    })?;
    let ty_raw = &m["type"];
    let align = p
        .align
        .captures_iter(ty_raw)
        .filter_map(|c| c[1].parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let mut ty = p
        .align
        .replace_all(ty_raw, " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if m["qualifiers"].split_whitespace().any(|q| q == "volatile") {
        ty = format!("volatile {ty}");
    }
    if ty.is_empty() || ty == "volatile " {
        return Err(format!(
            "{location}: __shared__ declaration without a type; write {FORM}"
        ));
    }
    let dims_raw = &m["dims"];
    let dims: String = dims_raw.split_whitespace().collect();
    let name = &m["name"];
    let decl = if m.name("extern").is_some() {
        if dims != "[]" {
            return Err(format!(
                "{location}: extern __shared__ must be an array of unknown size: NAME[]"
            ));
        }
        format!("EMU_EXTERN_SHARED({name}, {align}, {ty});")
    } else {
        if dims.contains("[]") {
            return Err(format!(
                "{location}: only extern __shared__ may have an unknown size"
            ));
        }
        format!("EMU_SHARED({name}, {align}, {ty}{});", dims_raw.trim_end())
    };
    Ok(format!("{}{decl}{}{comment}", &m["indent"], &m["rest"]))
}

/// A whole source rewritten, keeping line numbers: the first line is a `#line` directive.
pub fn rewrite(text: &str, path: &str) -> Result<String, String> {
    let mut out = format!("#line 1 \"{path}\"\n");
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let body = line.trim_end_matches(['\r', '\n']);
        out += &rewrite_line(body, &format!("{path}:{}", i + 1))?;
        out += &line[body.len()..];
    }
    Ok(out)
}

/// The `extern "C" __global__` kernels of a source, in order, comments ignored.
pub fn kernel_names(text: &str) -> Vec<String> {
    let p = patterns();
    let code = p.comment.replace_all(text, " ");
    p.kernel
        .captures_iter(&code)
        .map(|c| c[1].to_string())
        .collect()
}

/// The wrapper translation unit of one kernel file.
pub fn wrapper(source_path: &str, include_name: &str, kernels: &[String]) -> String {
    let mut s = format!(
        "// Generated from {source_path} for the CPU emulator; do not edit.\n\
         #include \"cuda_emu.h\"\n\
         EMU_KERNELS_BEGIN\n\
         #include \"kernels/{include_name}\"\n\
         EMU_KERNELS_END\n"
    );
    for k in kernels {
        s += &format!("EMU_EXPORT({k})\n");
    }
    s
}

/// The wrapper translation unit of one kernel file in another build than bf16 (the float32
/// and mixed builds, `nvrtc_options::VARIANT_BUILDS`): `define` set before the file, and
/// `<prefix>_launch_<kernel>` exported for each of its kernels. Each kernel is renamed
/// `<prefix>_<kernel>` first: `extern "C"` names are global even inside the anonymous
/// namespace, and the bf16 build already defines them.
pub fn wrapper_variant(
    source_path: &str,
    include_name: &str,
    kernels: &[String],
    (label, define, prefix): (&str, &str, &str),
) -> String {
    let mut s = format!(
        "// Generated from {source_path} ({label} build) for the CPU emulator; do not edit.\n\
         #define {define} 1\n\
         #include \"cuda_emu.h\"\n"
    );
    for k in kernels {
        s += &format!("#define {k} {prefix}_{k}\n");
    }
    s += &format!(
        "EMU_KERNELS_BEGIN\n\
         #include \"kernels/{include_name}\"\n\
         EMU_KERNELS_END\n"
    );
    for k in kernels {
        s += &format!("EMU_EXPORT_NAMED({k}, {prefix}_launch_{k})\n");
    }
    s
}
