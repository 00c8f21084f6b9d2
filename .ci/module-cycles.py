#!/usr/bin/env python3
"""Fails, naming the circle, when a crate's modules import each other in a circle.

Usage: .ci/module-cycles.py CRATE_SRC_DIR...

Checked at every level: among the files and folders directly under `src/`
(`src/store/redis.rs` belongs to `store`), and likewise among those directly
in each folder module (`src/service/encode.rs` and `src/service/tenants.rs`
inside `service`). Module A depends on B when any file of A names B's path
(`crate::…`, `super::…` or `self::…`, in a `use`, a path, or a
`use crate::{B, …}` group). The folder's own `lib.rs`/`mod.rs` wires its
modules and is not counted. Comments and string literals are ignored. Layers that point one way
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


def module_path(src: Path, file: Path) -> list[str]:
    """The module a file is: `src/a/b.rs` is `a::b`, `src/a/mod.rs` is `a`, `src/lib.rs` the root."""
    parts = list(file.relative_to(src).parts)
    if parts[-1] in ROOT_FILES or parts[-1] == "mod.rs":
        return parts[:-1]
    return parts[:-1] + [parts[-1][:-3]]


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


PATH = re.compile(r"\b(?<!::)(crate|super|self)((?:::(?:super|[A-Za-z_][A-Za-z0-9_]*))*)::(\{)?")


def references(src: Path, file: Path, text: str):
    """(absolute module path, line) of every `crate::…`, `super::…` and `self::…` path in `text`."""
    here = module_path(src, file)
    for m in PATH.finditer(text):
        segments = [m.group(1)] + [s for s in m.group(2).split("::") if s]
        if segments[0] == "crate":
            base, rest = [], segments[1:]
        else:
            base = list(here)
            rest = segments
            while rest and rest[0] in ("super", "self"):
                if rest[0] == "super":
                    if not base:
                        break
                    base = base[:-1]
                rest = rest[1:]
        line = text.count("\n", 0, m.start()) + 1
        if m.group(3):
            depth, j = 1, m.end()
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            tails = group_names(text[m.end():j - 1])
        else:
            name = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[m.end():])
            tails = [name.group(0)] if name else []
        if not tails:
            yield base + rest, line
        for tail in tails:
            yield base + rest + [tail], line


def dependencies(src: Path, folder: Path):
    """(module -> {dependency -> [file:line, …]}) among the modules directly in `folder` (a crate's
    `src/`, or a folder module inside it): a module's files and subfolders count as one node."""
    prefix = module_path(src, folder / "mod.rs") if folder != src else []
    modules = set()
    for f in folder.iterdir():
        if f.is_dir() and any(f.rglob("*.rs")):
            modules.add(f.name)
        elif f.suffix == ".rs" and f.name not in ROOT_FILES and f.name != "mod.rs":
            modules.add(f.stem)
    edges: dict[str, dict[str, list[str]]] = {}
    for file in sorted(folder.rglob("*.rs")):
        path = module_path(src, file)
        # The folder's own root (lib.rs, mod.rs) wires its modules together.
        if len(path) <= len(prefix):
            continue
        here = path[len(prefix)]
        text = strip_comments_and_strings(file.read_text())
        for target, line in references(src, file, text):
            if target[:len(prefix)] != prefix or len(target) <= len(prefix):
                continue
            name = target[len(prefix)]
            if name in modules and name != here:
                edges.setdefault(here, {}).setdefault(name, []).append(f"{file}:{line}")
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
        folders = [src] + sorted(d for d in src.rglob("*") if d.is_dir() and any(d.glob("*.rs")))
        for folder in folders:
            modules, edges = dependencies(src, folder)
            if folder != src and len(modules) < 2:
                continue
            circles = strongly_connected(modules, edges)
            failed = failed or bool(circles)
            for component in circles:
                circle = one_circle(component, edges)
                print(f"{folder}: import circle among {len(component)} modules: {', '.join(component)}")
                print(f"  e.g. {' -> '.join(circle)}")
                for a, b in zip(circle, circle[1:]):
                    print(f"    {a} -> {b}: {', '.join(edges[a][b][:3])}")
            if not circles:
                print(f"{folder}: no import circle among {len(modules)} modules")
    if failed:
        print("module-cycles: move the shared helper to a leaf module, or invert the dependency, so layers point one way")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
