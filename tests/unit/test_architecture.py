"""The import rules of docs/ARCHITECTURE.md, checked on the source with ``ast`` (module-level and
function-level imports, ``importlib.import_module`` with a literal name too).

Layers, lowest first: ``edgeminer.indexer`` (store, data, analysis) < the service library (every
``edgeminer.service`` module that is not a front end) < the front ends: the REST API
(``edgeminer.service.api.*``), the CLI (``edgeminer.service.cli``, ``cli_*``) and the notebook API
(``edgeminer/__init__.py``). A layer imports only from the layers below it.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LANCE = {"lancedb", "lance"}
WEB = {"fastapi", "starlette", "uvicorn"}


@dataclass(frozen=True)
class Import:
    importer: str  # module name, e.g. edgeminer.service.selection
    target: str  # the module imported (``from pkg import mod`` -> pkg.mod when mod is a module)
    names: tuple[str, ...]  # names taken from it (``from x import a, b``); () for ``import x``
    line: int
    lazy: bool  # inside a function
    type_only: bool  # under ``if TYPE_CHECKING:``

    def __str__(self) -> str:
        where = "function-level" if self.lazy else "module-level"
        names = f" ({', '.join(self.names)})" if self.names else ""
        return f"{self.importer}:{self.line} imports {self.target}{names} [{where}]"


def _module_files() -> dict[str, Path]:
    """Every module of the package by its import name. indexer/ and service/ are walked where they live
    (edgeminer/ links to them); edgeminer/__init__.py is the notebook API."""
    out = {"edgeminer": ROOT / "edgeminer" / "__init__.py"}
    for top in ("indexer", "service"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = ("edgeminer", *path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _module_files()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve_relative(importer: str, level: int, module: str | None) -> str:
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


class _Collector(ast.NodeVisitor):
    def __init__(self, importer: str):
        self.importer = importer
        self.found: list[Import] = []
        self._depth = 0
        self._type_only = 0

    def _add(self, target: str, names: tuple[str, ...], node: ast.stmt | ast.expr) -> None:
        self.found.append(
            Import(self.importer, target, names, node.lineno, self._depth > 0, self._type_only > 0)
        )

    def _function(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function  # noqa: N815

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            self._type_only += 1
            for child in node.body:
                self.visit(child)
            self._type_only -= 1
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, (), node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve_relative(self.importer, node.level, node.module) if node.level else node.module or ""
        plain: list[str] = []
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in MODULES:  # `from edgeminer.service import cli` imports the module edgeminer.service.cli
                self._add(sub, (), node)
            else:
                plain.append(alias.name)
        if plain:
            self._add(base, tuple(plain), node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("import_module", "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                self._add(arg.value, (), node)
            else:  # a computed name: recorded so the rule on dynamic imports sees it
                self._add("<dynamic>", (ast.unparse(arg),), node)
        self.generic_visit(node)


def _imports_of(name: str) -> list[Import]:
    collector = _Collector(name)
    collector.visit(ast.parse(MODULES[name].read_text(encoding="utf-8"), filename=str(MODULES[name])))
    return collector.found


IMPORTS = {name: _imports_of(name) for name in MODULES}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def layer(name: str) -> str:
    """indexer | library | api | cli | notebook | external."""
    if name == "edgeminer":
        return "notebook"
    if _within(name, "edgeminer.indexer"):
        return "indexer"
    if _within(name, "edgeminer.service.api"):
        return "api"
    if re.match(r"^edgeminer\.service\.cli(_\w+)?(\.|$)", name):
        return "cli"
    if _within(name, "edgeminer.service"):
        return "library"
    return "external"


def _all(where: str) -> list[Import]:
    return [imp for name, found in IMPORTS.items() if layer(name) == where for imp in found]


def _report(bad: list[Import]) -> str:
    return "\n  " + "\n  ".join(str(b) for b in bad)


# ----------------------------------------------------------------------------------------------
# The checker itself
# ----------------------------------------------------------------------------------------------


def test_the_checker_sees_every_layer_and_function_level_imports() -> None:
    layers = {layer(name) for name in MODULES}
    assert {"indexer", "library", "api", "cli", "notebook"} <= layers
    assert "edgeminer.indexer.store" in MODULES and "edgeminer.service.api.app" in MODULES
    serve = [i for i in IMPORTS["edgeminer.service.cli"] if i.target == "edgeminer.service.api.app"]
    assert serve and all(i.lazy for i in serve), "cmd_serve's function-level import of the app was not seen"
    store = [i for i in IMPORTS["edgeminer.indexer.store"] if i.target == "lancedb"]
    assert store and not store[0].lazy
    assert layer("edgeminer.service.cli_common") == "cli" and layer("edgeminer.service.filters") == "library"
    assert _resolve_relative("edgeminer.service.export.runner", 1, "common") == "edgeminer.service.export.common"
    assert _resolve_relative("edgeminer.service.export", 2, "filters") == "edgeminer.service.filters"


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


def test_indexer_imports_nothing_from_the_service() -> None:
    bad = [i for i in _all("indexer") if layer(i.target) not in ("indexer", "external")]
    assert not bad, "edgeminer.indexer is the bottom layer: it never imports edgeminer.service" + _report(bad)


def test_the_service_library_never_imports_a_front_end() -> None:
    bad = [i for i in _all("library") if layer(i.target) in ("api", "cli", "notebook")]
    assert not bad, (
        "library modules of edgeminer.service (everything but service/api/ and service/cli*.py) never import "
        "the API, the CLI or the notebook API; move what they share into the library (e.g. service/media.py "
        "for the media path checks)" + _report(bad)
    )


def test_the_api_and_the_cli_do_not_import_each_other() -> None:
    bad = [i for i in _all("api") if layer(i.target) in ("cli", "notebook")]
    assert not bad, "the REST API never imports the CLI" + _report(bad)
    # `edgeminer serve` builds the app: cli.py may import create_app and the serve checks of middleware.py
    allowed = {"edgeminer.service.api.app", "edgeminer.service.api.middleware"}
    bad = [i for i in _all("cli") if layer(i.target) == "api" and not (
        i.importer == "edgeminer.service.cli" and i.target in allowed
    )]
    assert not bad, "only cli.py's serve imports from the API (app.create_app, middleware)" + _report(bad)
    bad = [i for i in _all("cli") if layer(i.target) == "notebook"]
    assert not bad, "the CLI never imports the notebook API" + _report(bad)


def test_command_modules_share_cli_common_not_cli() -> None:
    own = ("edgeminer.service.cli", "edgeminer.service.cli_common")
    bad = [i for i in _all("cli") if i.importer not in own and i.target == "edgeminer.service.cli"]
    assert not bad, (
        "a command module (cli_<area>.py) takes shared helpers from service/cli_common.py; cli.py imports the "
        "command modules and calls their register(), so importing cli back would be a cycle" + _report(bad)
    )


def test_the_notebook_api_is_cheap_and_calls_the_library_only() -> None:
    found = IMPORTS["edgeminer"]
    eager = [i for i in found if not i.lazy and not i.type_only and i.target.split(".")[0] not in (
        "__future__", "os", "shutil", "collections", "pathlib", "typing"
    )]
    assert not eager, "edgeminer/__init__.py imports only the standard library at import time" + _report(eager)
    bad = [i for i in found if layer(i.target) in ("api", "cli")]
    assert not bad, "the notebook API calls the library (indexer, service library), not the API or CLI" + _report(bad)


# ----------------------------------------------------------------------------------------------
# Third-party boundaries
# ----------------------------------------------------------------------------------------------


def test_only_the_store_imports_lancedb_and_lance() -> None:
    bad = [
        i
        for found in IMPORTS.values()
        for i in found
        if i.target.split(".")[0] in LANCE and i.importer != "edgeminer.indexer.store"
    ]
    assert not bad, "indexer/store.py is the only module that imports lancedb or lance (pylance)" + _report(bad)


def test_the_web_framework_stays_in_the_front_ends() -> None:
    # service/errors.py is the library's one exception: it maps every error to problem+json and installs
    # the handlers create_app uses
    bad = [
        i
        for name, found in IMPORTS.items()
        for i in found
        if i.target.split(".")[0] in WEB
        and layer(name) not in ("api", "cli")
        and name != "edgeminer.service.errors"
    ]
    assert not bad, "fastapi / starlette / uvicorn are imported by service/api/, cli.py and service/errors.py only" + (
        _report(bad)
    )


# ----------------------------------------------------------------------------------------------
# Wiring inside the front ends
# ----------------------------------------------------------------------------------------------

#: the helpers one route module takes from another (anything else shared goes to service/api/models.py,
#: deps.py or the library). Adding one here is a decision, not a fix.
ROUTE_HELPERS = {
    ("edgeminer.service.api.routes.jobs", "public_job"),  # the public view of a job doc (202 answers)
    ("edgeminer.service.api.routes.samples", "select_columns"),  # mining: the samples' column list
    ("edgeminer.service.api.routes.samples", "jsonable"),  # mining: a row as JSON
    ("edgeminer.service.api.app", "_version"),  # health: the package version
}


def test_routes_import_each_other_only_for_listed_helpers() -> None:
    routes = [i for i in _all("api") if _within(i.importer, "edgeminer.service.api.routes")]
    bad = []
    for i in routes:
        if not (_within(i.target, "edgeminer.service.api.routes") or i.target == "edgeminer.service.api.app"):
            continue
        if i.target == "edgeminer.service.api.routes":  # the package itself (empty __init__)
            continue
        if not i.names or any((i.target, n) not in ROUTE_HELPERS for n in i.names):
            bad.append(i)
    assert not bad, (
        "a route module imports another route module (or app.py) only for the helpers in ROUTE_HELPERS" + _report(bad)
    )


def test_front_ends_are_wired_explicitly() -> None:
    """No import by computed name: app.py imports each route module and includes its router, cli.py
    imports each command module and calls its register(), the export runner maps targets to imported
    modules; grep finds every wire."""
    bad = [i for found in IMPORTS.values() for i in found if i.target == "<dynamic>"]
    assert not bad, "import modules by name (explicit wiring), not importlib.import_module(<computed>)" + _report(bad)
    app = {i.target for i in IMPORTS["edgeminer.service.api.app"]}
    routes = {n for n in MODULES if _within(n, "edgeminer.service.api.routes") and n != "edgeminer.service.api.routes"}
    assert routes <= app, f"route modules app.py does not import (so never mounts): {sorted(routes - app)}"
    cli = {i.target for i in IMPORTS["edgeminer.service.cli"]}
    commands = {n for n in MODULES if re.match(r"^edgeminer\.service\.cli_\w+$", n)} - {"edgeminer.service.cli_common"}
    assert commands <= cli, f"command modules cli.py does not import (so never registers): {sorted(commands - cli)}"

