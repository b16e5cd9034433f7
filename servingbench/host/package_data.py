"""Files shipped inside the package, found through importlib.resources so that an installed
(non-editable) servingbench finds them too: the result schemas (``schemas/``), the container
image of each arm (``data/images.yaml``), prompt sources and shipped traces (``data/``).

``servingbench/schemas/`` holds files, written beside the repository's ``schemas/`` by
``servingbench schemas --write`` (a test fails when either differs from the types).
``servingbench/data/images.yaml`` is a symbolic link to ``containers/images.yaml``, where it is
edited and pinned (``git commit containers/images.yaml``); a built wheel holds a copy. Standard
library only.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def package_path(*parts: str) -> Path:
    """A file or folder shipped in the package, as a filesystem path (pip installs packages
    as files; a zipped install is not supported)."""
    return Path(str(resources.files("servingbench").joinpath("/".join(parts))))
