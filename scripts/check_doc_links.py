#!/usr/bin/env python3
"""Checks the relative links of the repository's Markdown files: every `[text](path)` and
`[text](path#anchor)` outside code must name a file or folder that exists, and an anchor must
be a heading of that file, spelled as GitHub spells it (lower case, punctuation dropped, spaces
to hyphens, repeats numbered -1, -2, ...). Links to http(s) and mailto are not fetched.

    python3 scripts/check_doc_links.py [ROOT]      # exit 0: all resolve; 1: each bad one printed
"""

import re
import sys
from pathlib import Path

SKIP = {".git", "target", "node_modules", ".venv", "venv"}
LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def without_code(text):
    """The text with fenced blocks, indented blocks and inline code blanked out."""
    out, fenced = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
        elif fenced or line.startswith("    ") or line.startswith("\t"):
            out.append("")
        else:
            out.append(re.sub(r"`[^`]*`", "", line))
    return out


def anchors(path):
    """GitHub's anchors of the headings of `path`."""
    seen, found, fenced = {}, set(), False
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(2).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def check(root):
    bad = []
    for md in sorted(root.rglob("*.md")):
        if SKIP & set(md.relative_to(root).parts):
            continue
        for lineno, line in enumerate(without_code(md.read_text(encoding="utf-8")), 1):
            for target in LINK.findall(line):
                if re.match(r"^[a-z]+:", target):
                    continue
                file_part, _, anchor = target.partition("#")
                dest = (md.parent / file_part).resolve() if file_part else md
                where = f"{md.relative_to(root)}:{lineno}: {target}"
                if not dest.exists():
                    bad.append(f"{where}: no such file")
                elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                    bad.append(f"{where}: no heading #{anchor} in {dest.name}")
    return bad


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent.parent).resolve()
    bad = check(root)
    for b in bad:
        print(b)
    done = f"{len(bad)} broken link(s)" if bad else "all links resolve"
    print(f"check_doc_links: {done}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
