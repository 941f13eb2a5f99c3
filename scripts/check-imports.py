#!/usr/bin/env python3
"""Checks that imports between cella's source files run one way.

Run by test.sh. Fails (exit 1) when
  * two or more files of a crate import each other, directly or through
    others (a loop), or
  * a file imports from a higher layer than its own (see LAYERS).

What counts as an import of file B by file A: a `use` or a qualified path
(`crate::x::y`, `super::y`, `self::y`, or `m::y` after `use ...::m`) in A's
code that names an item B defines. A `pub use` re-export is a name, not a
dependency: paths are followed through re-exports to the file that defines
the item, so a facade mod.rs re-exporting its children is no loop, while a
child calling a function that mod.rs itself defines is an edge to mod.rs.
Comments and string literals are ignored; `mod x;` declarations are not
imports. Files reached only under `#[cfg(test)]` are checked for loops like
any other, but not for layers (tests may reach up to build fixtures).

Usage: scripts/check-imports.py [--graph] [ROOT]   (ROOT defaults to the repo)
       scripts/check-imports.py --self-test          (the check on made-up crates)
"""

import os
import re
import sys

# Layers of the host crate, lowest first: a file may import only from its own
# layer or lower ones. Top-level modules of src/ not named here fail the check.
LAYERS = [
    {"text", "hostfs", "sandbox"},
    {"config"},
    {"image"},
    {"devices"},
    {"vmm"},
    {"launch"},
    {"commands"},
    {"cli", "main"},
]

ITEM_RE = re.compile(
    r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:unsafe\s+|async\s+|const\s+|extern\s+\"C\"\s+)*"
    r"(fn|struct|enum|trait|type|const|static|union|mod|macro_rules!)\s+(\w+)",
    re.M,
)
MOD_DECL_RE = re.compile(r"^\s*(?:#\[(?P<attr>[^\]]*)\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(?P<name>\w+)\s*;", re.M)
USE_RE = re.compile(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);")
PATH_RE = re.compile(r"(?<![\w:])((?:crate|super|self|cella)(?:\s*::\s*\w+)+)")


def strip(src):
    """Blanks comments, string and char literals, keeping line numbers."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * src.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', src[i:i + 10]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            m = re.match(r'r(#*)"', src[i:])
            end = '"' + m.group(1)
            j = src.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * src.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append('""' + "\n" * src.count("\n", i, j))
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{..}') or a lifetime ('a).
            m = re.match(r"'(\\[^']{1,10}|[^\\'])'", src[i:])
            if m:
                out.append("' '")
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


class File:
    def __init__(self, path, modpath, test):
        self.path = path
        self.modpath = modpath  # tuple of segments from the crate root
        self.test = test
        with open(path, encoding="utf-8") as f:
            self.code = strip(f.read())
        self.items = {m.group(2) for m in ITEM_RE.finditer(self.code)}
        self.reexports = []  # (name or '*', absolute target path)
        self.uses = []  # (line, absolute path)
        self.aliases = {}  # local name -> absolute path
        self.inline = []  # (start, end, name) of inline `mod name { ... }`
        for m in re.finditer(r"\bmod\s+(\w+)\s*\{", self.code):
            depth, j = 1, m.end()
            while j < len(self.code) and depth:
                depth += {"{": 1, "}": -1}.get(self.code[j], 0)
                j += 1
            self.inline.append((m.start(), j, m.group(1)))

    def modpath_at(self, pos):
        """The module a position is in: the file's, or an inline one's."""
        inner = [(a, name) for a, b, name in self.inline if a <= pos < b]
        return self.modpath + tuple(name for _, name in sorted(inner))


def line_of(code, pos):
    return code.count("\n", 0, pos) + 1


def parse_use(text):
    """Returns (path segments, alias) pairs of one use declaration."""
    res = []
    # Resolve 'as' before removing whitespace.
    text = re.sub(r"\s+as\s+", " as ", text.strip())
    tokens = re.sub(r"\s+", " ", text)

    def walk(prefix, s):
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
                continue
            depth += ch == "{"
            depth -= ch == "}"
            cur += ch
        parts.append(cur)
        for p in parts:
            p = p.strip()
            if not p:
                continue
            if "{" in p:
                head, rest = p.split("{", 1)
                walk(prefix + [x.strip() for x in head.split("::") if x.strip()], rest.rstrip()[:-1])
            else:
                alias = None
                if " as " in p:
                    p, alias = [x.strip() for x in p.split(" as ", 1)]
                segs = [x.strip() for x in p.split("::") if x.strip()]
                res.append((prefix + segs, alias))

    walk([], tokens)
    return res


def absolute(f, segs, crate_name, pos, files=None):
    """Turns a path as written at pos in file f into segments from the crate
    root, or None for a path into another crate or the prelude."""
    if not segs:
        return None
    head = segs[0]
    if head == "crate" or (head == crate_name and crate_name):
        return tuple(segs[1:])
    base = f.modpath_at(pos)
    if head == "self":
        return base + tuple(segs[1:])
    if head == "super":
        i = 0
        while i < len(segs) and segs[i] == "super":
            base = base[:-1]
            i += 1
        return base + tuple(segs[i:])
    # `use child::Item;`: a path relative to the module, through a child.
    if files is not None and base + (head,) in files:
        return base + tuple(segs)
    return None


def collect(src_dir, crate_root, crate_name):
    files = {}

    def add(path, modpath, test):
        f = File(path, modpath, test)
        files[modpath] = f
        for m in MOD_DECL_RE.finditer(f.code):
            name, attr = m.group("name"), m.group("attr") or ""
            full = m.group(0)
            is_test = test or "cfg(test)" in full
            pm = re.search(r'#\[path\s*=\s*""\]', full)
            d = os.path.dirname(path)
            stem = os.path.basename(path)[:-3]
            if stem in ("mod", "lib", "main") or path == crate_root:
                sub = d
            else:
                sub = os.path.join(d, stem)
            cands = [os.path.join(sub, name + ".rs"), os.path.join(sub, name, "mod.rs")]
            if pm:
                # #[path] modules: the literal was blanked; read the original line.
                with open(path, encoding="utf-8") as fh:
                    orig = fh.read()
                pl = re.search(r'#\[path\s*=\s*"([^"]+)"\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+' + name + r"\s*;", orig)
                if pl:
                    cands = [os.path.join(d, pl.group(1))]
            for c in cands:
                if os.path.exists(c):
                    f.aliases[name] = modpath + (name,)
                    add(c, modpath + (name,), is_test)
                    break
            else:
                sys.exit(f"check-imports: {path}: mod {name}: file not found")

    add(crate_root, (), False)
    return files


def resolve(files, path, seen=None):
    """The file that defines the item named by an absolute path, following
    re-exports, or None when the path leaves the crate's files."""
    seen = seen or set()
    if path in seen:
        return None
    seen.add(path)
    # Longest prefix that is a module file.
    k = len(path)
    while k > 0 and path[:k] not in files:
        k -= 1
    f = files.get(path[:k])
    if f is None:
        return None
    rest = path[k:]
    if not rest:
        return f
    name = rest[0]
    if name in f.items:
        return f
    for rname, target in f.reexports:
        if rname == name:
            r = resolve(files, target + rest[1:], seen)
            if r is not None:
                return r
    for rname, target in f.reexports:
        if rname == "*":
            r = resolve(files, target + rest, seen)
            if r is not None:
                return r
    return f


def analyse(files, crate_name):
    for f in files.values():
        for m in USE_RE.finditer(f.code):
            is_pub = bool(m.group(1))
            for segs, alias in parse_use(m.group(2)):
                if segs and segs[-1] == "self":
                    segs = segs[:-1]
                ab = absolute(f, segs, crate_name, m.start(), files)
                if ab is None:
                    continue
                name = alias or (segs[-1] if segs[-1] != "*" else "*")
                if is_pub:
                    if name == "*":
                        f.reexports.append(("*", ab[:-1]))
                    else:
                        f.reexports.append((name, ab))
                else:
                    if name == "*":
                        f.uses.append((line_of(f.code, m.start()), ab[:-1]))
                    else:
                        f.uses.append((line_of(f.code, m.start()), ab))
                        f.aliases[name] = ab
        code_wo_use = USE_RE.sub(lambda m: "\n" * m.group(0).count("\n"), f.code)
        for m in PATH_RE.finditer(code_wo_use):
            segs = [s.strip() for s in m.group(1).split("::")]
            ab = absolute(f, segs, crate_name, m.start())
            if ab is not None:
                f.uses.append((line_of(code_wo_use, m.start()), ab))
        for name, ab in f.aliases.items():
            for m in re.finditer(r"(?<![\w:])" + re.escape(name) + r"\s*::\s*(\w+)", code_wo_use):
                f.uses.append((line_of(code_wo_use, m.start()), ab + (m.group(1),)))
    edges = {}
    for f in files.values():
        for line, ab in f.uses:
            t = resolve(files, ab)
            # Naming a module is no import; using what it defines is.
            if t is None or t is f or ab in files:
                continue
            # A file's own descendants declared inside it (inline) are itself.
            edges.setdefault(f.path, {}).setdefault(t.path, (line, "::".join(("crate",) + ab)))
    return edges


def sccs(nodes, edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def layer_of(modpath, is_main):
    if is_main:
        return len(LAYERS) - 1
    top = modpath[0] if modpath else None
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    return None


def check_crate(root, src_dir, crate_root, crate_name, layered, graph):
    files = collect(src_dir, crate_root, crate_name)
    edges = analyse(files, crate_name)
    rel = lambda p: os.path.relpath(p, root)
    problems = []
    for comp in sccs([f.path for f in files.values()], edges):
        lines = []
        cs = set(comp)
        for a in comp:
            for b, (line, what) in sorted(edges.get(a, {}).items()):
                if b in cs:
                    lines.append(f"    {rel(a)}:{line} uses {what} ({rel(b)})")
        problems.append("import loop between " + ", ".join(rel(c) for c in comp) + ":\n" + "\n".join(lines))
    if layered:
        by_path = {f.path: f for f in files.values()}
        for a, targets in sorted(edges.items()):
            fa = by_path[a]
            la = layer_of(fa.modpath, a == crate_root and crate_root.endswith("main.rs"))
            if fa.test:
                continue
            if la is None:
                problems.append(f"{rel(a)}: module {fa.modpath[0]} is in no layer; add it to LAYERS in {rel(__file__)}")
                continue
            for b, (line, what) in sorted(targets.items()):
                lb = layer_of(by_path[b].modpath, False)
                if lb is not None and lb > la:
                    problems.append(f"{rel(a)}:{line} uses {what} from {rel(b)}, a higher layer")
    if graph:
        for a, targets in sorted(edges.items()):
            for b in sorted(targets):
                print(f"{rel(a)} -> {rel(b)}")
    return problems, len(files)


def check_all(root, graph):
    problems = []
    total = 0
    for src, crate_root, name, layered in CRATES:
        if not os.path.exists(os.path.join(root, crate_root)):
            continue
        p, n = check_crate(root, os.path.join(root, src), os.path.join(root, crate_root), name, layered, graph)
        problems += p
        total += n
    return problems, total


CRATES = [
        ("src", "src/lib.rs", "", True),
        ("src", "src/main.rs", "", False),
        ("guest-init/src", "guest-init/src/lib.rs", "", False),
        ("guest-init/src", "guest-init/src/main.rs", "", False),
]


def self_test():
    """The check finds what it is for, on made-up crates."""
    import tempfile

    def run(files):
        with tempfile.TemporaryDirectory() as root:
            for path, text in files.items():
                full = os.path.join(root, path)
                os.makedirs(os.path.dirname(full), exist_ok=True)
                with open(full, "w", encoding="utf-8") as f:
                    f.write(text)
            return check_all(root, False)[0]

    lib = "mod text;\nmod config;\nmod image;\n"
    cases = [
        # A loop through a use and a qualified path.
        ({"src/lib.rs": lib, "src/text.rs": "", "src/image.rs": "",
          "src/config/mod.rs": "mod a;\nmod b;\n",
          "src/config/a.rs": "use super::b::B;\npub struct A;\n",
          "src/config/b.rs": "pub struct B;\nfn f() { crate::config::a::A; }\n"},
         ["import loop between src/config/a.rs, src/config/b.rs"]),
        # A lower layer using a higher one.
        ({"src/lib.rs": lib, "src/text.rs": "", "src/image.rs": "pub fn f() {}\n",
          "src/config/mod.rs": "// use crate::image::f; is a comment\nfn g() { crate::image::f(); }\n"},
         ["src/config/mod.rs:2 uses crate::image::f from src/image.rs, a higher layer"]),
        # A facade re-exporting its children, and children using each other
        # one way, is no loop; neither is a child naming its parent module.
        ({"src/lib.rs": lib, "src/text.rs": "", "src/image.rs": "",
          "src/config/mod.rs": "mod a;\nmod b;\npub use a::A;\npub use b::B;\n",
          "src/config/a.rs": "use crate::config::B;\npub struct A(B);\n",
          "src/config/b.rs": "use crate::config;\npub struct B;\n"},
         []),
    ]
    for i, (files, want) in enumerate(cases):
        got = run(files)
        ok = len(got) == len(want) and all(w in g for w, g in zip(want, got))
        if not ok:
            sys.exit(f"check-imports: self-test {i} failed: want {want}, got {got}")
    print(f"check-imports: self-test passed ({len(cases)} cases)", file=sys.stderr)


def main():
    if "--self-test" in sys.argv:
        self_test()
        return
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    graph = "--graph" in sys.argv
    root = os.path.abspath(args[0] if args else os.path.join(os.path.dirname(__file__), ".."))
    problems, total = check_all(root, graph)
    if problems:
        for p in problems:
            print("check-imports: " + p, file=sys.stderr)
        sys.exit(1)
    print(f"check-imports: {total} files, imports run one way", file=sys.stderr)


if __name__ == "__main__":
    main()
