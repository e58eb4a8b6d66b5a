"""The wheel: installed without the source tree, it still has its templates and checks."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "monitor", "checks", "alert_templates")

# Run from the unpacked wheel, away from the source tree: the imports must come from it.
INSTALLED_RUN = """
import sys
site = sys.argv[1]
sys.path.insert(0, site)
import checks, monitor
from monitor.notify.templates import BUILTIN_TEMPLATES
for module in (monitor, checks):
    assert module.__file__.startswith(site), module.__file__
assert str(BUILTIN_TEMPLATES).startswith(site), BUILTIN_TEMPLATES
from monitor.console.pages import STATIC, Pages
assert Pages().words and (STATIC / "console.js").is_file()  # the console's files came along
from monitor.cli import main
sys.exit(main(["validate", sys.argv[2]]))
"""


def test_the_wheel_carries_the_templates_and_validates_the_shipped_config(
    tmp_path: Path,
) -> None:
    # a copy of what the build reads: setuptools' build/ directory in the tree could
    # hand over files from an earlier build
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(REPO / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = tmp_path.glob("csp_monitor-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        site = tmp_path / "site"
        archive.extractall(site)
    templates = {
        path.relative_to(REPO).as_posix()
        for folder in ("alert_templates", "monitor/console/templates", "monitor/console/static")
        for path in (REPO / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert templates and templates <= names, sorted(templates - names)

    run = subprocess.run(
        [sys.executable, "-c", INSTALLED_RUN, str(site), str(REPO / "config.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "every template renders" in run.stdout, run.stdout
