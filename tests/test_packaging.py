"""Packaging: the licence, typing markers, the version, install hints, and the clash with
PyPI's other ``autograd`` (HIPS autograd) reported in one clear ImportError."""

import importlib.metadata
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

import autograd

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("autograd", "nn", "optim", "chainrule")


def test_license_is_mit_as_an_spdx_string_with_the_file():
    """chainrule's own code is MIT; the Sobol direction numbers it ships are Joe and Kuo's, under their BSD
    licence, whose notice travels with them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT AND BSD-3-Clause"
    assert project["project"]["license-files"] == ["LICENSE", "autograd/sobol_direction_numbers.LICENSE"]
    assert "Frances Y. Kuo and Stephen Joe" in (ROOT / "autograd" / "sobol_direction_numbers.LICENSE").read_text()
    assert "setuptools>=77" in project["build-system"]["requires"][0]  # reads the SPDX string
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "chainrule authors" in text


def test_every_package_is_marked_typed_and_ships_the_marker():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["package-data"]["*"] == ["py.typed"]
    for package in PACKAGES:
        assert (ROOT / package / "py.typed").exists(), package


def test_version_is_pytorchs_api_with_the_installed_distribution_s_as_its_local_label():
    assert autograd.version.chainrule == importlib.metadata.version("chainrule")
    assert autograd.__version__ == f"2.13.0+chainrule.{autograd.version.chainrule}"
    assert re.fullmatch(r"\d+\.\d+\.\d+\+chainrule(\.[0-9a-z]+)+", autograd.__version__)  # (PEP 440)
    # the checks programs make to pick their code paths
    assert autograd.__version__ >= "1.5.0" and autograd.__version__ >= "2.0" and autograd.__version__ < "3"
    assert tuple(int(n) for n in autograd.__version__.split("+")[0].split(".")[:2]) == (2, 13)


def test_install_hints_name_the_distribution_not_a_source_checkout():
    editable = "pip install" + " -e"  # (spelt in two so that this line is not a hit)
    hints = [f"{path.relative_to(ROOT)}:{number}" for package in (*PACKAGES, "tests", "benchmarks")
             for path in (ROOT / package).rglob("*.py")
             for number, line in enumerate(path.read_text().splitlines(), 1) if editable in line]
    assert hints == []


def test_the_sdist_carries_the_notebooks_the_tests_read():
    manifest = (ROOT / "MANIFEST.in").read_text().splitlines()
    assert "graft notebooks" in manifest and "graft tests" in manifest


# --- the clash with HIPS autograd -------------------------------------------------------------

@pytest.fixture(scope="module")
def hips_wheel(tmp_path_factory):
    """HIPS autograd's real wheel, as pip downloads it (skipped offline)."""
    folder = tmp_path_factory.mktemp("hips")
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "autograd>=1.5,<2",
                             "-d", str(folder)], capture_output=True, text=True, timeout=120)
    wheels = list(folder.glob("autograd-*.whl"))
    if result.returncode != 0 or not wheels:
        pytest.skip(f"cannot download HIPS autograd's wheel (offline?): {result.stderr.strip()[-200:]}")
    return wheels[0]


def install_ours(site):
    for package in ("autograd", "nn", "optim"):
        shutil.copytree(ROOT / package, site / package, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))


def install_hips(site, wheel):
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site, [name for name in archive.namelist() if name.startswith("autograd/")])


def python(site, code):
    """`python -c code` with only ``site`` ahead of the standard library and numpy."""
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=site, timeout=60)


def assert_clash_message(result):
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: two different packages named 'autograd' are installed into "), last
    assert "chainrule's (autograd, nn, optim) and HIPS autograd (pip's 'autograd'" in last
    assert "virtual environment of its own" in last


def test_hips_installed_first_then_chainrule_fails_on_import_autograd(hips_wheel, tmp_path):
    install_hips(tmp_path, hips_wheel)
    install_ours(tmp_path)  # ours last: our __init__.py won
    for module in ("autograd", "nn", "optim"):
        assert_clash_message(python(tmp_path, f"import {module}"))


def test_chainrule_installed_first_then_hips_fails_on_import_nn_and_optim(hips_wheel, tmp_path):
    install_ours(tmp_path)
    install_hips(tmp_path, hips_wheel)  # HIPS last: its __init__.py won, so `import autograd` is wholly HIPS's
    for module in ("nn", "optim"):
        assert_clash_message(python(tmp_path, f"import {module}"))
    hips = python(tmp_path, "import autograd.numpy as np; from autograd import grad; print(grad(np.sin)(0.0))")
    assert hips.returncode == 0 and hips.stdout == "1.0\n"  # HIPS autograd works; nothing of ours runs there


def test_chainrule_alone_imports(tmp_path):
    install_ours(tmp_path)
    result = python(tmp_path, "import autograd, nn, optim; print(autograd.Tensor.__name__)")
    assert result.returncode == 0 and result.stdout == "Tensor\n", result.stderr
