"""Package layout (the metadata is in pyproject.toml): the code in ``src/sar``, the Hydra configs of the
repository root's ``conf/`` folder shipped inside it as ``sar.conf`` (docs/design.md)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages("src"), "sar.conf"],
    package_dir={"": "src", "sar.conf": "conf"},
)
