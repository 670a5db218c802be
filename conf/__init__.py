"""Hydra config tree of sar, at the repository root (``conf/``) and installed as the package ``sar.conf``.

The build maps this folder into the package (``setup.py``: ``package_dir={"sar.conf": "conf"}``), so
``initialize_config_module("sar.conf")`` and ``pkg://sar.conf`` work from any directory, editable install or wheel.
"""

from pathlib import Path

#: The folder holding the config groups (this package's folder, wherever it is installed).
CONF_DIR = Path(__file__).resolve().parent
