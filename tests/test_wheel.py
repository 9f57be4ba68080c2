"""The wheel built from the repo installs into a fresh virtual environment and works from another directory.

Builds the wheel from a copy of the working tree (so parallel runs never share a build/ folder),
creates a venv without system site packages, installs the wheel with its core dependencies
(numpy, onnxruntime, click) from the package index, then runs a script from tmp_path that imports
the three packages without torch, lists the device profiles (package data), loads a bundle exported
here and predicts, and checks the probabilities against the same bundle loaded in this process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest

import edgeinfer as ei

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                              ".hypothesis", "demo-output", "results")

SCRIPT = r"""
import json, sys
import numpy as np

import importlib, pkgutil
import edgeinfer, edgeinfer.explain, edgeinfer.export

# The device core imports only numpy, onnxruntime and click at load: every module of edgeinfer and
# edgeinfer.explain must import here (the GPU kernels need the gpu extra; export's internals need torch).
light = {"numpy", "onnxruntime", "click"}
skipped = {"edgeinfer.explain.kernels.triton_kernels"}
failed = {}
for package in (edgeinfer, edgeinfer.explain):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name in skipped or info.name.startswith("edgeinfer.export."):
            continue
        try:
            importlib.import_module(info.name)
        except Exception as err:
            failed[info.name] = f"{type(err).__name__}: {err}"
heavy = sorted(m for m in ("torch", "onnx", "sklearn", "captum", "triton", "pytriton", "matplotlib", "jinja2",
                           "weasyprint", "pandas") if m in sys.modules)
bundle, rows = sys.argv[1], np.asarray(json.loads(sys.argv[2]))
session = edgeinfer.load(bundle)
decision = session.predict(rows[0])
print(json.dumps({
    "edgeinfer": edgeinfer.__file__,
    "explain": edgeinfer.explain.__file__,
    "export": edgeinfer.export.__file__,
    "prefix": sys.prefix,
    "import_failures": failed,
    "heavy_modules": heavy,
    "devices": [d.name for d in edgeinfer.list_devices()],
    "class_name": decision.class_name,
    "probabilities": session.predict_proba(rows).tolist(),
}))
"""


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def clean_env() -> dict[str, str]:
    """This process's environment without anything that would let the repo or .venv leak in."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory, clean_env) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO, source, ignore=SKIP)
    # The repo's .venv has setuptools and build: no isolated build env to fetch. setuptools >= 70.1 builds
    # wheels itself, so the "wheel" entry of build-system.requires is not needed (hence --skip-dependency-check).
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--skip-dependency-check", "--outdir", str(work / "dist"), str(source)],
         cwd=work, env=clean_env)
    (built,) = (work / "dist").glob("edgeinfer-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory, clean_env) -> Path:
    """A fresh venv (no system site packages) with the wheel and its core dependencies; returns its bin/."""
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    bin_dir = env_dir / "bin"
    _run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(wheel)], cwd=env_dir, env=clean_env)
    return bin_dir


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


@pytest.mark.parametrize("source_dir, glob, installed_as", [
    ("explain", "*.py", "edgeinfer/explain"),
    ("explain/kernels", "*.py", "edgeinfer/explain/kernels"),
    ("export", "*.py", "edgeinfer/export"),
    ("devices", "*.toml", "edgeinfer/devices"),
    ("edgeinfer", "*.py", "edgeinfer"),
    ("edgeinfer/templates", "*", "edgeinfer/templates"),
    ("explain/templates", "*.toml", "edgeinfer/explain/templates"),
])
def test_wheel_holds_every_source_file_under_its_installed_name(wheel, source_dir, glob, installed_as):
    expected = {f"{installed_as}/{p.name}" for p in (REPO / source_dir).glob(glob)}
    assert expected, f"no {glob} in {source_dir}/"
    missing = expected - _wheel_names(wheel)
    assert not missing, f"{wheel.name} lacks {sorted(missing)}"


def test_wheel_declares_only_the_light_core_dependencies(wheel):
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        lines = zf.read(meta).decode().splitlines()
    core = sorted(line.split(":", 1)[1].strip().split(">")[0].split("=")[0].split("<")[0].strip()
                  for line in lines if line.startswith("Requires-Dist:") and "extra ==" not in line)
    assert core == ["click", "numpy", "onnxruntime"]


def test_installed_wheel_imports_loads_and_predicts_from_another_directory(
        installed, bc_bundle, bc_session, breast_cancer, tmp_path, clean_env):
    rows = breast_cancer.X_test[:5]
    done = _run([str(installed / "python"), "-c", SCRIPT, str(bc_bundle), json.dumps(rows.tolist())],
                cwd=tmp_path, env=clean_env)
    out = json.loads(done.stdout.strip().splitlines()[-1])

    site = Path(out["prefix"]).resolve()
    assert site == installed.parent.resolve()
    for key in ("edgeinfer", "explain", "export"):
        path = Path(out[key]).resolve()
        assert site in path.parents and "site-packages" in path.parts, f"{key} resolved to {path}"
        assert REPO not in path.parents, f"{key} resolved from the repo: {path}"
    assert out["import_failures"] == {}
    assert out["heavy_modules"] == []
    assert sorted(out["devices"]) == sorted(d.name for d in ei.list_devices())
    expected = bc_session.predict_proba(rows)
    # Same bundle, same ONNX Runtime kernels: the fresh install answers as this process does.
    np.testing.assert_allclose(np.asarray(out["probabilities"]), expected, rtol=0, atol=1e-6)
    assert out["class_name"] == bc_session.classes[int(expected[0].argmax())]


def test_installed_console_script_lists_devices(installed, tmp_path, clean_env):
    script = installed / "edgeinfer"
    assert script.is_file(), f"the wheel installed no console script at {script}"
    done = _run([str(script), "devices"], cwd=tmp_path, env=clean_env)
    for profile in ei.list_devices():
        assert profile.name in done.stdout
    shown = _run([str(script), "devices", "raspberry-pi-4"], cwd=tmp_path, env=clean_env)
    assert "Cortex-A72" in shown.stdout


def test_a_core_install_names_the_extra_that_export_and_the_demo_need(installed, tmp_path, clean_env):
    """Without the export extra, the Python API and the CLI say what to install instead of a traceback."""
    def last_error(code: str) -> str:
        done = subprocess.run([str(installed / "python"), "-c", code], cwd=tmp_path, env=clean_env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1
        return done.stderr.strip().splitlines()[-1]

    assert last_error("import edgeinfer as ei; ei.export(None, None)") == (
        "edgeinfer.errors.MissingDependencyError: exporting a model needs the optional package 'onnx', which is not "
        "installed; install it with: pip install 'edgeinfer[export]'")
    demo = subprocess.run([str(installed / "edgeinfer"), "demo", "-o", str(tmp_path / "out")], cwd=tmp_path,
                          env=clean_env, capture_output=True, text=True, timeout=120)
    assert (demo.returncode, demo.stdout) == (1, "")
    assert demo.stderr == ("error: edgeinfer demo needs the optional packages 'torch', 'onnx', 'scikit-learn', "
                           "'pyts', 'jinja2', 'weasyprint', which are not installed; install them with: "
                           "pip install 'edgeinfer[export,data,report]'\n")
    assert not (tmp_path / "out").exists()
    assert last_error("from edgeinfer.export.models import tabular_mlp") == (
        "edgeinfer.errors.MissingDependencyError: training and exporting a model needs the optional package 'torch', "
        "which is not installed; install it with: pip install 'edgeinfer[export]'")


FIRST_PREDICT = r"""
import json, sys
import numpy as np
import edgeinfer

session = edgeinfer.load(sys.argv[1])
before = "numpy.ma" in sys.modules
x = session.reference.X
session.predict(x[0])
session.predict(dict(zip(session.schema.names, x[1].tolist())))
session.predict([x[2], x[3].tolist()])
session.predict_proba(x[:4])
print(json.dumps({"numpy": np.__version__, "before": before, "after": "numpy.ma" in sys.modules}))
"""


def test_predict_does_not_import_numpy_ma_under_numpy_2(installed, bc_bundle, tmp_path, clean_env):
    """NumPy 2 imports numpy.ma on first use (NumPy 1 with numpy): the masked-array check on every row did, and the
    first predict after load took 15-73 ms there against 0.6 ms. The fresh venv has the NumPy the index gives."""
    done = _run([str(installed / "python"), "-c", FIRST_PREDICT, str(bc_bundle)], cwd=tmp_path, env=clean_env)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if int(out["numpy"].split(".")[0]) < 2:
        pytest.skip(f"NumPy {out['numpy']} imports numpy.ma with numpy")
    assert (out["before"], out["after"]) == (False, False)
