"""One import name: everything installs under ``edgeminer`` (no top-level ``indexer`` / ``service``),
the dashboard files ship inside the package, and ``import edgeminer`` works in a fresh environment."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

import edgeminer

ROOT = Path(__file__).resolve().parents[2]


def test_every_module_imports_under_edgeminer_only() -> None:
    for info in pkgutil.walk_packages(edgeminer.__path__, "edgeminer."):
        importlib.import_module(info.name)
    top = {name.split(".")[0] for name in sys.modules}
    assert not top & {"indexer", "service"}, "a module was imported under a second, top-level name"


@pytest.mark.slow
def test_wheel_installs_one_package_with_the_dashboard(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("edgeminer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("edgeminer-")}
    assert tops == {"edgeminer"}, tops
    for needed in ("edgeminer/indexer/store.py", "edgeminer/service/cli.py", "edgeminer/ui/index.html",
                   "edgeminer/ui/app.js", "edgeminer/ui/panels/clusters.js"):
        assert needed in names, needed

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    probe = (
        "import importlib.util as u, edgeminer, pathlib; "
        "assert u.find_spec('indexer') is None and u.find_spec('service') is None; "
        "assert (pathlib.Path(edgeminer.__file__).parent / 'ui' / 'index.html').is_file(); print('ok')"
    )
    out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
