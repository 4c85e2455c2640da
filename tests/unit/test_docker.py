"""docker/ checked without a Docker engine (issue 13): the Dockerfile parsed by BuildKit's own parser (the
``dockerfile`` package), the compose file's paths, volumes and environment, the root .dockerignore
against the real tree, and (slow) the non-editable install the image makes: the same files the
Dockerfile copies, installed into a fresh virtual environment, serve the dashboard."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from servers import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yml"
DEFAULT = re.compile(r"^\$\{(\w+):-([^}]*)\}$")


def _instructions() -> list[Any]:
    dockerfile = pytest.importorskip("dockerfile", reason="pip install dockerfile (dev extra): BuildKit's parser")
    return list(dockerfile.parse_file(str(DOCKER / "Dockerfile")))


def _copy_sources() -> list[str]:
    """Every source path of the Dockerfile's COPY lines (relative to the build context, the repo root)."""
    out = []
    for ins in _instructions():
        if ins.cmd.upper() == "COPY":
            out.extend(ins.value[:-1])
    return out


def _service() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]["edgeminer"]  # type: ignore[no-any-return]


# -- .dockerignore ---------------------------------------------------------------------------------


def _patterns() -> list[tuple[bool, str]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            rules.append((negate, line.lstrip("!").strip("/")))
    return rules


def _regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: ``*`` and ``?`` within one path element, ``**`` any number of them."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def _match(pattern: str, path: str) -> bool:
    """The pattern matches the path or one of its parent folders (a folder left out takes its contents)."""
    parts = path.split("/")
    rx = _regex(pattern)
    return any(rx.match("/".join(parts[:n])) for n in range(1, len(parts) + 1))


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` (relative, POSIX) out of the build context: the last pattern
    that matches decides (``!`` brings a path back)."""
    verdict = False
    for negate, pattern in _patterns():
        if _match(pattern, path):
            verdict = not negate
    return verdict


def test_dockerignore_keeps_the_context_to_the_sources() -> None:
    for path in (".venv/lib/python3.11/site-packages/torch/__init__.py", ".venv-labelstudio/bin/python", ".git/HEAD",
                 "edgeminer-data/demo__samples.lance/data/x.lance", "demo-data/train/0/a.png", "media/cones/a.jpg",
                 "test-artifacts/report.html", ".pytest_cache/v/cache", "indexer/__pycache__/store.cpython-311.pyc",
                 "tests/unit/test_docker.py", "build/lib/edgeminer/__init__.py", "edgeminer.egg-info/PKG-INFO"):
        assert ignored(path), path
    for path in ("pyproject.toml", "README.md", "indexer/pipeline.py", "service/api/app.py", "ui/index.html",
                 "ui/panels/export.js", "edgeminer/__init__.py"):
        assert not ignored(path), path
    for src in _copy_sources():  # everything the Dockerfile copies is in the context
        assert (ROOT / src).exists() and not ignored(src), src


def test_the_real_build_context_is_small() -> None:
    total, files = 0, 0
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = Path(dirpath).relative_to(ROOT).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if not (ignored(rel_dir + d) and not _reopened(rel_dir + d))]
        for name in filenames:
            if not ignored(rel_dir + name):
                total += (Path(dirpath) / name).stat().st_size
                files += 1
    assert files > 50 and total < 20 * 2**20, (files, total)  # the sources: a few MB, not a 7 GB .venv


def _reopened(folder: str) -> bool:
    """A folder an ``!`` pattern reaches into (it must be walked even if a pattern excludes it)."""
    return any(negate and (pattern + "/").startswith(folder + "/") for negate, pattern in _patterns())


# -- Dockerfile -----------------------------------------------------------------------------------------


def test_dockerfile_installs_non_editable_with_a_weights_cache() -> None:
    ins = _instructions()
    runs = " ".join(" ".join(i.value) for i in ins if i.cmd.upper() == "RUN")
    assert "pip install ." in runs and "pip install -e" not in runs
    assert "index.html" in runs and "UI_DIR" in runs  # the build checks the dashboard was installed
    env = {}
    for i in ins:
        if i.cmd.upper() == "ENV":
            env.update(dict(zip(i.value[::2], i.value[1::2], strict=True)))
    assert env["HF_HOME"].startswith("/cache/") and env["TORCH_HOME"].startswith("/cache/")
    volumes = [v for i in ins if i.cmd.upper() == "VOLUME" for v in i.value]
    assert "/data" in volumes and "/cache" in volumes
    assert [i.value for i in ins if i.cmd.upper() == "USER"] == [("edgeminer",)]


# -- compose ---------------------------------------------------------------------------------------------


def _default(value: str) -> str:
    m = DEFAULT.match(value)
    assert m, value
    return m.group(2)


def test_compose_paths_resolve_from_the_compose_files_folder() -> None:
    svc = _service()
    context = (DOCKER / svc["build"]["context"]).resolve()
    assert context == ROOT
    assert (context / svc["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    binds = {}
    for spec in svc["volumes"]:
        source, target, *mode = spec.split(":") if not spec.startswith("$") else _split_var(spec)
        binds[target] = (source, mode)
    # the README's <repo>/media: relative paths in compose resolve against docker/, so ../media
    media_src, media_mode = binds["/media"]
    assert (DOCKER / _default(media_src)).resolve() == ROOT / "media" and media_mode == ["ro"]
    models_src, models_mode = binds["/models"]
    assert (DOCKER / _default(models_src)).resolve() == ROOT / "models" and models_mode == ["ro"]
    named = yaml.safe_load(COMPOSE.read_text())["volumes"]
    assert binds["/data"][0] in named and binds["/cache"][0] in named and binds["/data"][0] != binds["/cache"][0]


def _split_var(spec: str) -> tuple[str, ...]:
    var, rest = spec.split("}", 1)
    return (var + "}", *rest.lstrip(":").split(":"))


def test_compose_environment_caches_weights_and_requires_a_key() -> None:
    env = _service()["environment"]
    assert env["HF_HOME"].startswith("/cache/") and env["TORCH_HOME"].startswith("/cache/")
    assert env["EDGEMINER_MEDIA_ROOTS"] == "/media" and env["EDGEMINER_DATA_DIR"] == "/data"
    assert ":?" in env["EDGEMINER_API_KEY"]  # compose refuses to start without it
    assert _default(env["HF_HUB_OFFLINE"]) == "0"
    assert all(p.startswith("127.0.0.1:") for p in _service()["ports"])


# -- the non-editable install ------------------------------------------------------------------------------



def _context_copy(dest: Path) -> None:
    """The files the Dockerfile copies, as it copies them (links kept), without caches."""
    dest.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for src in _copy_sources():
        path = ROOT / src
        if path.is_dir():
            shutil.copytree(path, dest / src, symlinks=True, ignore=skip)
        else:
            shutil.copy2(path, dest / src)


def _fresh_venv(where: Path) -> Path:
    """A new virtual environment that sees the project's dependencies (torch...) through a .pth line
    naming this environment's site-packages, so nothing is downloaded; edgeminer itself is not visible
    (that folder's own .pth files, among them the editable install's hook, are not run)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    site = next((where / "lib").glob("python3*/site-packages"))
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "torch").is_dir())
    (site / "zz_deps.pth").write_text(str(deps) + "\n")
    return where / "bin" / "python"


@pytest.mark.slow
def test_a_non_editable_install_serves_the_dashboard(tmp_path: Path) -> None:
    context = tmp_path / "context"
    _context_copy(context)
    python = _fresh_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}  # only the venv's own
    pip = [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--ignore-installed", "-q"]
    done = subprocess.run([*pip, str(context)], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    where = subprocess.run(
        [str(python), "-c", "import edgeminer, edgeminer.service.settings as s; print(edgeminer.__file__, s.UI_DIR)"],
        cwd=tmp_path, capture_output=True, text=True, check=True, env=env,
    ).stdout.split()
    installed = Path(where[0]).parent
    assert str(installed).startswith(str(tmp_path / "venv")) and not (installed / "ui").is_symlink()
    assert Path(where[1]) == installed / "ui" and (installed / "ui" / "index.html").is_file()

    port = free_port()
    exe = python.with_name("edgeminer")
    server = subprocess.Popen(
        [str(exe), "--data-dir", str(tmp_path / "data"), "serve", "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(base + "/api/v1/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:] if server.stderr else ""
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.5)
        with urllib.request.urlopen(base + "/", timeout=10) as resp:
            page = resp.read().decode()
        assert resp.status == 200 and "<script" in page and "has no index.html" not in page
        scripts = re.findall(r'<script[^>]+src="([^"]+\.js)"', page)
        assert scripts, page[:500]
        with urllib.request.urlopen(base + "/" + scripts[0].lstrip("./"), timeout=10) as resp:
            js = resp.read().decode()
        assert resp.status == 200 and "javascript" in resp.headers["content-type"] and len(js) > 100
        with urllib.request.urlopen(base + "/panels/export.js", timeout=10) as resp:
            assert resp.status == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
