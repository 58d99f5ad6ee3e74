#!/usr/bin/env python3
"""Prepares CUDA kernel sources for the CPU emulator (reference for build.rs).

Two steps, both plain regular expressions (README.md, "The build step", is the specification):

1. rewrite(): every `__shared__` declaration becomes an EMU_SHARED / EMU_EXTERN_SHARED macro
   call, on the same line, so the emulator can give each block fresh, poisoned storage. No
   macro can do this: `extern static` is ill-formed and a macro cannot see the declarator.
2. wrapper(): the C++ file that compiles one kernel file and exports emu_launch_<kernel> for
   each `extern "C" __global__` kernel in it.

usage: rewrite.py build KERNEL_DIR OUT_DIR   rewrite KERNEL_DIR/*.cu and *.cuh into
                                             OUT_DIR/kernels/, write OUT_DIR/<stem>.emu.cpp
       rewrite.py rewrite FILE               print FILE rewritten
"""
import os
import re
import sys

SHARED = re.compile(r"\b__shared__\b")
# `#pragma unroll [N]`: g++ warns about it (and -Wunknown-pragmas cannot be silenced by a
# diagnostic pragma before GCC 13), so it becomes a comment.
PRAGMA_UNROLL = re.compile(r"^\s*#\s*pragma\s+unroll\b")
DECLARATION = re.compile(
    r"^(?P<indent>\s*)(?P<extern>extern\s+)?(?P<qualifiers>(?:(?:static|volatile)\s+)*)"
    r"__shared__\s+(?P<type>(?:[^;=\[\],<>]|<[^;=\[\]<>]*>)*?)\s*\b(?P<name>[A-Za-z_]\w*)\s*"
    r"(?P<dims>(?:\[[^\[\];]*\]\s*)*);(?P<rest>.*)$"
)
ALIGN = re.compile(r"__align__\s*\(\s*(\d+)\s*\)")
KERNEL = re.compile(
    r'extern\s+"C"\s+__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+'
    r"(?:__launch_bounds__\s*\([^)]*\)\s*)?([A-Za-z_]\w*)\s*\("
)
COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
FORM = "[extern] __shared__ [__align__(N)] TYPE NAME[DIM]...;  (one declaration per line)"


class RewriteError(Exception):
    pass


def rewrite_line(line, where):
    """Returns `line` (without its newline) with its __shared__ declaration rewritten, or
    commented out if it is a `#pragma unroll`."""
    code, slashes, comment = line.partition("//")
    if PRAGMA_UNROLL.match(code):
        return "//" + line
    if not SHARED.search(code):
        return line
    m = DECLARATION.match(code)
    if not m:
        raise RewriteError(f"{where}: cannot rewrite this __shared__ declaration; write {FORM}")
    qualifiers = m["qualifiers"].split()
    aligns = [int(a) for a in ALIGN.findall(m["type"])]
    type_ = " ".join(ALIGN.sub(" ", m["type"]).split())
    if "volatile" in qualifiers:
        type_ = "volatile " + type_
    dims = "".join(m["dims"].split())
    align = max(aligns, default=0)
    if not type_:
        raise RewriteError(f"{where}: __shared__ declaration without a type; write {FORM}")
    if m["extern"]:
        if dims != "[]":
            raise RewriteError(f"{where}: extern __shared__ must be an array of unknown size: NAME[]")
        decl = f"EMU_EXTERN_SHARED({m['name']}, {align}, {type_});"
    else:
        if "[]" in dims:
            raise RewriteError(f"{where}: only extern __shared__ may have an unknown size")
        decl = f"EMU_SHARED({m['name']}, {align}, {type_}{m['dims'].rstrip()});"
    return m["indent"] + decl + m["rest"] + slashes + comment


def rewrite(text, path):
    """Rewrites a whole source, keeping line numbers: the first line is a #line directive."""
    out = [f'#line 1 "{path}"\n']
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        body = line.rstrip("\r\n")
        out.append(rewrite_line(body, f"{path}:{number}") + line[len(body):])
    return "".join(out)


def kernel_names(text):
    return KERNEL.findall(COMMENT.sub(" ", text))


def wrapper(source_path, include_name, kernels):
    exports = "".join(f"EMU_EXPORT({k})\n" for k in kernels)
    return (
        f"// Generated from {source_path} for the CPU emulator; do not edit.\n"
        '#include "cuda_emu.h"\n'
        "EMU_KERNELS_BEGIN\n"
        f'#include "kernels/{include_name}"\n'
        "EMU_KERNELS_END\n"
        f"{exports}"
    )


def write_if_changed(path, text):
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def build(kernel_dir, out_dir):
    os.makedirs(os.path.join(out_dir, "kernels"), exist_ok=True)
    for name in sorted(os.listdir(kernel_dir)):
        if not name.endswith((".cu", ".cuh")):
            continue
        path = os.path.abspath(os.path.join(kernel_dir, name))
        with open(path, encoding="utf-8") as f:
            text = f.read()
        write_if_changed(os.path.join(out_dir, "kernels", name), rewrite(text, path))
        if name.endswith(".cu"):
            stem = name[: -len(".cu")]
            write_if_changed(
                os.path.join(out_dir, f"{stem}.emu.cpp"), wrapper(path, name, kernel_names(text))
            )


def main(argv):
    try:
        if len(argv) == 4 and argv[1] == "build":
            build(argv[2], argv[3])
        elif len(argv) == 3 and argv[1] == "rewrite":
            with open(argv[2], encoding="utf-8") as f:
                sys.stdout.write(rewrite(f.read(), os.path.abspath(argv[2])))
        else:
            sys.stderr.write(__doc__)
            return 2
    except RewriteError as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
