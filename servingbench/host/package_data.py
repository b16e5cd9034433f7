"""Files shipped inside the package, found through importlib.resources so that an installed
(non-editable) servingbench finds them too: the result schemas (``schemas/``), the container
image of each arm (``data/images.yaml``), prompt sources and shipped traces (``data/``).

In the repository ``servingbench/schemas`` and ``servingbench/data/images.yaml`` are symbolic
links to ``schemas/`` and ``containers/images.yaml``, where they are edited; a built wheel holds
copies. Runtime module: standard library only.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def package_path(*parts: str) -> Path:
    """A file or folder shipped in the package, as a filesystem path (pip installs packages
    as files; a zipped install is not supported)."""
    return Path(str(resources.files("servingbench").joinpath("/".join(parts))))
