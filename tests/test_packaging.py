"""Both install kinds work: a wheel in a fresh venv, and the editable
install every project venv uses (one .pth entry: ``tractor_diag/tui`` is a
symlink to ``tui/``, so no package needs a finder), and that install is
quiet."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

import tractor_diag

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TIMEOUT = 240


def run(cmd: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, **kw)
    assert proc.returncode == 0, f"{cmd} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Build from a copy: the checkout's build/ and *.egg-info are shared with
    # whoever else builds at the same time.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("tractor_diag", "tui", "xontrib"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)], cwd=out)
    (whl,) = out.glob("tractor_diag-*.whl")
    return whl


def test_wheel_layout(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for required in ("tractor_diag/__init__.py", "tractor_diag/cli.py",
                     "tractor_diag/commands/ptree.py", "tractor_diag/render/ptree.py",
                     "tractor_diag/tui/__init__.py", "xontrib/tractor_diag.py",
                     # the start-up hook `run` and `dash --` put on PYTHONPATH
                     "tractor_diag/_startup/sitecustomize.py"):
        assert required in names
    assert any(n.startswith("tractor_diag/tui/") and n.endswith(".tcss") for n in names)
    # every module is shipped: a subpackage missing from pyproject's
    # `packages` list is left out of a plain `pip install .`
    modules = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "tractor_diag").rglob("*.py")
                     if "__pycache__" not in p.parts)
    assert [m for m in modules if m not in names] == []
    # the dashboard lives under our package only, never as a generic `tui`
    assert not any(n.startswith("tui/") for n in names)
    assert not any(n.startswith("xontrib/__init__") for n in names)
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    assert "tractor-diag = tractor_diag.cli:main" in text
    assert "tractor_diag = xontrib.tractor_diag" in text


def test_demo_imports_are_runtime_dependencies(wheel):
    """The bundled demo runs after a plain ``pip install .``: every
    third-party module it imports is a dependency, not a test extra (without
    setproctitle its actors carry no ``_subactor[...]`` title)."""
    import ast
    import re

    names = zipfile.ZipFile(wheel).namelist()
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    required = set()
    for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines():
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
            required.add(re.split(r"[ <>=!~;\[(]", line.split(":", 1)[1].strip())[0].lower())
    imported = set()
    for node in ast.walk(ast.parse((REPO / "tractor_diag" / "demo_tree.py").read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "tractor_diag"}
    assert "setproctitle" in third_party
    assert third_party <= required, third_party - required


def test_wheel_installs_into_a_fresh_venv(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
        cwd=tmp_path)
    # Dependencies come from the test venv (a plain path entry: its .pth
    # files, and so our own editable finder, are not processed).
    fresh_site = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          cwd=tmp_path).stdout.strip())
    (fresh_site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    out = run([str(env_dir / "bin" / "tractor-diag"), "--help"], cwd=tmp_path).stdout
    assert "ptree" in out and "usage: tractor-diag" in out
    where = run([str(py), "-c",
                 "import tractor_diag, tractor_diag.tui, tractor_diag.commands.ptree as p; "
                 "print(tractor_diag.__file__); print(tractor_diag.tui.__file__)"],
                cwd=tmp_path).stdout.split()
    assert all(w.startswith(str(fresh_site)) for w in where), where
    run([str(py), "-m", "tractor_diag", "ptree", "--help"], cwd=tmp_path)


def test_editable_install_resolves_from_anywhere(tmp_path):
    # cwd outside the checkout: only the installed finder can find us
    out = run([sys.executable, "-c",
               "import tractor_diag, tractor_diag.tui, tractor_diag.commands.ptree; "
               "print(tractor_diag.__file__); print(tractor_diag.tui.__file__)"],
              cwd=tmp_path).stdout.split()
    # a stale install maps the package as a namespace (no __file__): that is
    # the failure this guards against
    assert out == [str(REPO / "tractor_diag" / "__init__.py"),
                   str(REPO / "tractor_diag" / "tui" / "__init__.py")]
    assert (REPO / "tractor_diag" / "tui").resolve() == REPO / "tui"
    help_text = run([str(BIN / "tractor-diag"), "--help"], cwd=tmp_path).stdout
    assert "ptree" in help_text
    version = run([sys.executable, "-m", "tractor_diag", "--version"], cwd=tmp_path).stdout
    assert version.strip() == f"tractor-diag {tractor_diag.__version__}"


def test_editable_install_into_a_fresh_venv_is_quiet(tmp_path):
    """``pip install -e .`` prints no setuptools warning: no package-dir
    mapping (which made setuptools install a finder and warn "Editable
    installation... folders with the same name"), and no package left out
    of the ``packages`` list."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("tractor_diag", "tui", "xontrib"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=ignore, symlinks=True)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    out = run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
               "-e", str(src)], cwd=tmp_path)
    noise = [ln for ln in (out.stdout + out.stderr).splitlines()
             if "Warning" in ln or "Editable installation" in ln]
    assert noise == [], "\n".join(noise)
    where = run([str(py), "-c", "import tractor_diag.tui, tractor_diag.commands.ptree, "
                 "xontrib.tractor_diag as x; print(tractor_diag.tui.__file__); print(x.__file__)"],
                cwd=tmp_path).stdout.split()
    assert where == [str(src / "tractor_diag" / "tui" / "__init__.py"),
                     str(src / "xontrib" / "tractor_diag.py")]


def test_pytest_runs_leave_xonsh_unloaded():
    """xonsh's pytest11 plugin imports and sets up xonsh in every run (seconds
    each time): this repo's addopts switch it off, and only collecting
    tests/test_xontrib.py loads it (for its fixtures)."""
    probe = ("import sys, pytest; rc = pytest.main(sys.argv[1:]); "
             "print('XONSH', 'xonsh' in sys.modules, rc)")
    base = [sys.executable, "-c", probe, "--collect-only", "-q"]
    out = run([*base, "tests/test_safetext.py"], cwd=REPO).stdout
    assert "XONSH False 0" in out, out
    if importlib.util.find_spec("xonsh") is not None:
        out = run([*base, "tests/test_xontrib.py"], cwd=REPO).stdout
        assert "XONSH True 0" in out, out
