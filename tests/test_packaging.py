"""The wheel ships the Hydra configs of the repository's conf/ (as sar.conf): a non-editable install composes the
default config and starts `python -m sar.train` from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_the_configs(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ behind
    for name in ("src", "conf"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, source / name)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(dist), str(source)], check=True, capture_output=True, timeout=600)
    wheel = next(dist.glob("sar-*.whl"))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # the new venv sees this environment's packages (torch, hydra, ...) after its own, but not its editable sar
    (site / "test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True, capture_output=True, timeout=600)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what the venv itself sees
    probe = (
        "import sar, sar.conf\n"
        "from hydra import compose, initialize_config_module\n"
        "with initialize_config_module(config_module='sar.conf', version_base='1.3'):\n"
        "    cfg = compose(config_name='train')\n"
        "print(sar.__file__, sar.conf.CONF_DIR, cfg.head.name, cfg.backbone.name, cfg.task.name)\n"
    )
    out = subprocess.run([str(python), "-c", probe], cwd=elsewhere, check=True, capture_output=True, text=True,
                         timeout=300, env=env).stdout.split()
    assert Path(out[0]).is_relative_to(venv) and Path(out[1]).is_relative_to(venv), out
    assert (Path(out[1]) / "train.yaml").is_file() and out[2:] == ["sar", "mobilenetv3", "topdown"]
    # the Hydra app itself (config_path pkg://sar.conf): print the composed job config without running it
    job = subprocess.run([str(python), "-m", "sar.train", "--cfg", "job", "head=heatmap"], cwd=elsewhere,
                         check=True, capture_output=True, text=True, timeout=300, env=env).stdout
    assert "name: heatmap" in job and "name: mobilenetv3" in job
