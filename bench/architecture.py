"""Architecture measures of the Python code, from its AST (no imports run).

Prints, for the packages under the repository root:
  * functions longer than --max-lines (default 60) lines, longest first;
  * how many annotations spell ``dict[str, Any]``;
  * function-level imports of the project's own modules (imports inside a def);
  * upward imports: a module importing a layer above its own. Layers, lowest first:
      0 the store and data plumbing (indexer/*, edgeminer/indexer/*)
      1 the domain library (service/* other than the two below)
      2 the front ends (service/api/*, service/cli*.py)
    An import from a lower layer into a higher one (e.g. service/export/runner.py importing
    service/api/routes/media.py) is upward.

Usage: .venv/bin/python bench/architecture.py [--max-lines 60] [--list]
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("indexer", "service")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> int:
    name = module.removeprefix("edgeminer.")
    if name.startswith("indexer"):
        return 0
    if name.startswith("service.api") or name.startswith("service.cli"):
        return 2
    return 1


def is_project(module: str) -> bool:
    name = module.removeprefix("edgeminer.")
    return name.split(".")[0] in PACKAGES or module == "edgeminer"


def resolve_from(node: ast.ImportFrom, module: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-lines", type=int, default=60)
    ap.add_argument("--list", action="store_true", help="list every finding, not only the counts")
    args = ap.parse_args()

    long_funcs: list[tuple[int, str]] = []
    dict_any = 0
    local_imports: list[str] = []
    upward: list[str] = []
    files = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    for path in files:
        text = path.read_text()
        tree = ast.parse(text)
        mod = module_name(path)
        is_pkg = path.name == "__init__.py"
        dict_any += text.count("dict[str, Any]")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > args.max_lines:
                    long_funcs.append((n, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"))
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import | ast.ImportFrom):
                        targets = (
                            [a.name for a in inner.names]
                            if isinstance(inner, ast.Import)
                            else [resolve_from(inner, mod, is_pkg)]
                        )
                        for t in targets:
                            if is_project(t):
                                local_imports.append(f"{path.relative_to(ROOT)}:{inner.lineno} {t}")
            if isinstance(node, ast.Import | ast.ImportFrom):
                targets = (
                    [a.name for a in node.names] if isinstance(node, ast.Import) else [resolve_from(node, mod, is_pkg)]
                )
                for t in targets:
                    if is_project(t) and layer(t) > layer(mod):
                        upward.append(f"{path.relative_to(ROOT)}:{node.lineno} {mod} -> {t}")
    local_imports = sorted(set(local_imports))
    long_funcs.sort(reverse=True)
    print(f"files: {len(files)}")
    print(f"functions over {args.max_lines} lines: {len(long_funcs)}")
    for n, where in long_funcs if args.list else long_funcs[:10]:
        print(f"  {n:4d}  {where}")
    print(f"'dict[str, Any]' annotations: {dict_any}")
    print(f"function-level imports of project modules: {len(local_imports)}")
    for item in local_imports if args.list else []:
        print(f"  {item}")
    print(f"upward imports: {len(set(upward))}")
    for item in sorted(set(upward)):
        print(f"  {item}")


if __name__ == "__main__":
    sys.exit(main())
