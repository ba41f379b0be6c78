"""Draw the house: the package's modules (rooms), their imports (arrows), floors, circles and upward arrows.

    python scripts/house.py [--package trt_minitron] [--layout docs/layout.md] [--largest 12] [--floors]

Reads the source with `ast` only (nothing is imported, no torch). An arrow is every import of one module of
the package by another: at import time, inside a function ("lazy") or under `if TYPE_CHECKING` ("typing").
- floors: topological layers of the import graph (a circle counts as one room); floor 0 imports nothing.
- circles: sets of modules (and of packages: a sub-package, or a top-level module, is one unit) that reach
  each other through arrows that run (at import time or lazily); circles closed only by typing-only arrows are
  listed apart (they never import anything at run time).
- upward arrows: with a layout file, arrows from one wing to a wing it may not import (the table in
  docs/layout.md: wing, paths, what lives there, what it may import); without one, the arrows that close
  a circle (one per back edge of a depth-first walk).
- largest files: by lines.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path, package_dir: Path) -> str:
    rel = path.relative_to(package_dir.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(tree: ast.Module):
    """(node, kind) for every import in a module: kind is "top", "lazy" or "typing"."""
    out = []

    def walk(node, kind):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.append((child, kind))
            elif isinstance(child, ast.If) and is_type_checking(child.test):
                for n in child.body:
                    walk_one(n, "typing")
                for n in child.orelse:
                    walk_one(n, kind)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                walk(child, "lazy" if kind == "top" else kind)
            else:
                walk(child, kind)

    def walk_one(node, kind):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append((node, kind))
        else:
            walk(node, kind)

    walk(tree, "top")
    return out


def resolve(node, mod: str, is_pkg: bool, modules: set[str]) -> list[str]:
    """The package's modules an import statement names (a `from X import name` names X.name when that is a module)."""
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
        found = []
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t:
                found.append(t)
        return found
    if node.level:
        base_parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
        base_parts = base_parts[:len(base_parts) - (node.level - 1)]
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    found = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in modules:
            found.append(sub)
        elif base in modules:
            found.append(base)
    return found


def read_package(package_dir: Path):
    files = sorted(p for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts)
    mods = {module_name(p, package_dir): p for p in files}
    names = set(mods)
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        for node, kind in imports(tree):
            for target in resolve(node, mod, path.name == "__init__.py", names):
                if target != mod:
                    edges[mod, target].add(kind)
    return mods, edges


def sccs(nodes, adj):
    """Tarjan's strongly connected components (iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(adj.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            pushed = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(adj.get(w, ())))))
                    pushed = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if pushed:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return out


def floors(nodes, adj):
    comps = sccs(nodes, adj)
    comp_of = {n: i for i, c in enumerate(comps) for n in c}
    level: dict[int, int] = {}

    def floor_of(i: int) -> int:
        if i in level:
            return level[i]
        level[i] = 0  # guards against re-entry; the condensation has no cycles
        deps = {comp_of[w] for n in comps[i] for w in adj.get(n, ()) if comp_of[w] != i}
        level[i] = 1 + max((floor_of(d) for d in deps), default=-1)
        return level[i]

    sys.setrecursionlimit(10000)
    return {n: floor_of(comp_of[n]) for n in nodes}, [c for c in comps if len(c) > 1]


def back_edges(nodes, adj):
    """Arrows that close a circle: back edges of a depth-first walk in name order."""
    state, out = {}, []

    def dfs(v):
        state[v] = 1
        for w in sorted(adj.get(v, ())):
            if state.get(w) == 1:
                out.append((v, w))
            elif w not in state:
                dfs(w)
        state[v] = 2

    for n in sorted(nodes):
        if n not in state:
            dfs(n)
    return out


def unit(mod: str, package: str) -> str:
    """A module's package-level unit: its sub-package below the root, or the top-level module itself."""
    parts = mod.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else mod


def parse_layout(path: Path, package: str):
    """Wings from the layout table: (name, path prefixes, allowed wing names), in table order."""
    wings = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.lstrip().startswith("|") or len(cells) < 4 or set(cells[0]) <= set("-: ") or cells[0] == "wing":
            continue
        name = cells[0].strip("*` ")
        prefixes = re.findall(r"`([^`]+)`", cells[1])
        allowed = {w.strip("*` ") for w in re.split(r"[,;]", cells[3]) if w.strip("*` -—")}
        wings.append((name, prefixes, allowed))
    return wings


def wing_of(mod: str, package: str, wings) -> str | None:
    rel = mod[len(package):].lstrip(".").replace(".", "/")
    best = None
    for name, prefixes, _ in wings:
        for p in prefixes:
            p = p.rstrip("/")
            p_mod = p[:-3] if p.endswith(".py") else p
            if rel == p_mod or rel.startswith(p_mod + "/") or (p_mod == "__init__" and rel == ""):
                if best is None or len(p_mod) > best[1]:
                    best = (name, len(p_mod))
    return best[0] if best else None


def short(mod: str, package: str) -> str:
    return mod[len(package) + 1:] if mod.startswith(package + ".") else mod


def runtime_circles(nodes, edges, key=lambda m: m) -> list[list[str]]:
    """Circles through arrows that run (import time or lazy), of modules or, with `key`, of units of them."""
    adj: dict[str, set[str]] = defaultdict(set)
    for (a, b), ks in edges.items():
        if ks != {"typing"} and key(a) != key(b):
            adj[key(a)].add(key(b))
    return [c for c in sccs({key(n) for n in nodes}, adj) if len(c) > 1]


def upward_arrows(mods, edges, package: str, wings) -> list[tuple[str, str, str, str, set]]:
    """(module, its wing, imported module, its wing, kinds) for every arrow the layout table does not allow."""
    allowed = {name: ok for name, _, ok in wings}
    out = []
    for (a, b), ks in sorted(edges.items()):
        wa, wb = wing_of(a, package, wings), wing_of(b, package, wings)
        if wa and wb and wa != wb and wb not in allowed[wa]:
            out.append((a, wa, b, wb, ks))
    return out


def homeless(mods, package: str, wings) -> list[str]:
    return sorted(m for m in mods if wing_of(m, package, wings) is None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", default="trt_minitron")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout to read (default: this one)")
    ap.add_argument("--layout", type=Path, default=None, help="default: ROOT/docs/layout.md when it exists")
    ap.add_argument("--largest", type=int, default=12)
    ap.add_argument("--floors", action="store_true", help="list the rooms on every floor")
    args = ap.parse_args(argv)
    package_dir = args.root / args.package
    mods, edges = read_package(package_dir)
    pkg = args.package
    nodes = set(mods)
    adj: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
    kinds = defaultdict(int)
    for ks in edges.values():
        kinds["top" if "top" in ks else ("lazy" if "lazy" in ks else "typing")] += 1
    packages = sorted({m for m, p in mods.items() if p.name == "__init__.py"})
    top_level = sorted(m for m, p in mods.items() if p.parent == package_dir and p.name != "__init__.py")
    print(f"house of {pkg} ({args.root})")
    print(f"rooms: {len(mods)} modules in {len(packages)} packages; {len(top_level)} modules at the top level: "
          + " ".join(short(m, pkg) for m in top_level))
    print(f"arrows: {len(edges)} ({kinds['top']} at import time, {kinds['lazy']} lazy, {kinds['typing']} typing only)")

    level, all_circles = floors(nodes, adj)
    circles = runtime_circles(nodes, edges)
    typing_circles = [c for c in all_circles if not any(set(c) <= set(r) for r in circles)]
    n_floors = 1 + max(level.values())
    print(f"floors: {n_floors}")
    if args.floors:
        for f in range(n_floors - 1, -1, -1):
            print(f"  {f:2d}: " + " ".join(sorted(short(m, pkg) or pkg for m in mods if level[m] == f)))

    print(f"circles (modules): {len(circles)}")
    for c in circles:
        print("  " + " <-> ".join(short(m, pkg) for m in c))
    if typing_circles:
        print(f"  closed only by typing-only arrows: {len(typing_circles)}")
        for c in typing_circles:
            print("    " + " <-> ".join(short(m, pkg) for m in c))
    uadj: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        if unit(a, pkg) != unit(b, pkg):
            uadj[unit(a, pkg)].add(unit(b, pkg))
    units = {unit(m, pkg) for m in mods}
    ucircles = runtime_circles(nodes, edges, key=lambda m: unit(m, pkg))
    ulevel, _ = floors(units, uadj)
    print(f"package level (a sub-package or a top-level module is one room): {len(units)} rooms, "
          f"{sum(len(v) for v in uadj.values())} arrows, {1 + max(ulevel.values())} floors")
    if args.floors:
        for f in range(max(ulevel.values()), -1, -1):
            print(f"  {f:2d}: " + " ".join(sorted(short(u, pkg) or pkg for u in units if ulevel[u] == f)))
    print(f"circles (packages): {len(ucircles)}")
    for c in ucircles:
        inner = sorted(f"{short(a, pkg)} -> {short(b, pkg)}" for a, b in edges
                       if unit(a, pkg) in c and unit(b, pkg) in c and unit(a, pkg) != unit(b, pkg))
        print("  " + " <-> ".join(short(u, pkg) for u in c) + "   via " + ", ".join(inner))

    layout = args.layout or (args.root / "docs" / "layout.md")
    if layout.is_file() and parse_layout(layout, pkg):
        wings = parse_layout(layout, pkg)
        up = [f"{short(a, pkg)} ({wa}) -> {short(b, pkg)} ({wb}) [{'/'.join(sorted(ks))}]"
              for a, wa, b, wb, ks in upward_arrows(mods, edges, pkg, wings)]
        print(f"upward arrows (against {layout.relative_to(args.root) if layout.is_relative_to(args.root) else layout}): "
              f"{len(up)}")
        for line in up:
            print("  " + line)
        lost = homeless(mods, pkg, wings)
        if lost:
            print(f"modules in no wing: {' '.join(short(m, pkg) for m in lost)}")
        counts = defaultdict(int)
        for m in mods:
            counts[wing_of(m, pkg, wings)] += 1
        print("wings: " + ", ".join(f"{name} {counts[name]}" for name, _, _ in wings))
    else:
        back = back_edges(nodes, adj)
        print(f"upward arrows (closing a circle; no layout file): {len(back)}")
        for a, b in back:
            print(f"  {short(a, pkg)} -> {short(b, pkg)} [{'/'.join(sorted(edges[a, b]))}]")

    sizes = sorted(((sum(1 for _ in p.open()), short(m, pkg) or "__init__") for m, p in mods.items()), reverse=True)
    print("largest files (lines): " + ", ".join(f"{name} {n}" for n, name in sizes[:args.largest]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
