#!/usr/bin/env python3
"""Fails, naming the circle, when a crate's top-level modules import each other in a circle.

Usage: .ci/module-cycles.py CRATE_SRC_DIR...

A crate's top-level modules are the files and folders directly under its
`src/` (`src/store/redis.rs` belongs to `store`). Module A depends on B when
any file of A names `crate::B` or reaches it through `super::` (in a `use`, a
path, or a `use crate::{B, …}` group). Comments and string literals are ignored. Layers that point one way
have no strongly connected component larger than one module; each one found
is printed as a concrete circle (`a -> b -> c -> a`) with the lines behind
every hop, so the reader can see which import to move.
"""

import re
import sys
from pathlib import Path

ROOT_FILES = {"lib.rs", "main.rs"}


def strip_comments_and_strings(text: str) -> str:
    """Blanks out comments, string and char literals (but paths in strings), keeping line numbers."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 260]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append("\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            literal = text[i + 1:j]
            # A path in a string is still an import: serde's
            # `deserialize_with = "crate::…"` names a function of another module.
            out.append(literal if re.fullmatch(r"(crate|super)::[\w:]+", literal) else "\n" * literal.count("\n"))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            i += len(re.match(r"'(\\.|[^\\'])'", text[i:i + 4]).group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def top_module(src: Path, file: Path) -> str:
    rel = file.relative_to(src)
    if len(rel.parts) == 1:
        return "(root)" if rel.name in ROOT_FILES else rel.stem
    return rel.parts[0]


def group_names(body: str) -> list[str]:
    """Top-level names of a `{a::x, b, c::{d, e}}` use group."""
    names, depth, current = [], 0, ""
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            names.append(current)
            current = ""
            continue
        if depth == 0:
            current += ch
    names.append(current)
    found = (re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", name) for name in names)
    return [m.group(1) for m in found if m]


def dependencies(src: Path):
    """(module -> {dependency -> [file:line, …]}) for one crate."""
    modules = {top_module(src, f) for f in src.rglob("*.rs")}
    edges: dict[str, dict[str, list[str]]] = {}
    for file in sorted(src.rglob("*.rs")):
        here = top_module(src, file)
        text = strip_comments_and_strings(file.read_text())
        # `super::` climbs one module: from src/a.rs or src/a/mod.rs one
        # climb reaches the crate root, from src/a/b.rs two do.
        rel = file.relative_to(src)
        depth_to_root = len(rel.parts) - (1 if rel.name == "mod.rs" else 0)
        for m in re.finditer(r"\b(crate::|(?:super::)+)(\{)?", text):
            if m.group(1) != "crate::" and m.group(1).count("super::") != depth_to_root:
                continue
            line = text.count("\n", 0, m.start()) + 1
            if m.group(2):
                depth, j = 1, m.end()
                while j < len(text) and depth:
                    depth += {"{": 1, "}": -1}.get(text[j], 0)
                    j += 1
                targets = group_names(text[m.end():j - 1])
            else:
                name = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[m.end():])
                targets = [name.group(0)] if name else []
            for target in targets:
                if target in modules and target != here and here != "(root)":
                    edges.setdefault(here, {}).setdefault(target, []).append(f"{file}:{line}")
    return modules, edges


def strongly_connected(modules, edges):
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(modules):
        if v not in index:
            visit(v)
    return out


def one_circle(component, edges):
    """A shortest circle through the component's first module."""
    start = component[0]
    members = set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(edges.get(v, {})):
                if w == start:
                    return paths[v] + [start]
                if w in members and w not in paths:
                    paths[w] = paths[v] + [w]
                    following.append(w)
        frontier = following
    return component


def main(dirs):
    failed = False
    for d in dirs:
        src = Path(d)
        if not src.is_dir():
            print(f"module-cycles: {src} is not a directory (give each crate's src/ folder)", file=sys.stderr)
            return 2
        modules, edges = dependencies(src)
        circles = strongly_connected(modules, edges)
        failed = failed or bool(circles)
        for component in circles:
            circle = one_circle(component, edges)
            print(f"{src}: import circle among {len(component)} modules: {', '.join(component)}")
            print(f"  e.g. {' -> '.join(circle)}")
            for a, b in zip(circle, circle[1:]):
                print(f"    {a} -> {b}: {', '.join(edges[a][b][:3])}")
        if not circles:
            print(f"{src}: no import circle among {len(modules)} modules")
    if failed:
        print("module-cycles: move the shared helper to a leaf module, or invert the dependency, so layers point one way")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
