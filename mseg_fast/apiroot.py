"""Locate the mseg-api data files (taxonomy TSVs, class names, list files).

The project never ships MSeg's files; the user points at a checkout of mseg-api. Order:
an explicit path, then the MSEG_API_ROOT environment variable, then an installed `mseg`
package. The environment variable is read only here, at the CLI edge.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from mseg_fast.errors import UserError

ENV_VAR = "MSEG_API_ROOT"
_MARKERS = ("mseg/class_remapping_files", "mseg/dataset_lists")


def _looks_like_api_root(path: Path) -> bool:
    return all((path / marker).is_dir() for marker in _MARKERS)


def find_mseg_api(explicit: str | os.PathLike | None = None, environ: dict | None = None) -> Path:
    """Return the mseg-api repository root (the folder that holds `mseg/`).

    Args:
        explicit: a path given on the command line (`--mseg-api`), or None.
        environ: the environment to consult (defaults to os.environ).

    Returns:
        The absolute root path.

    Raises:
        UserError: when no candidate holds `mseg/class_remapping_files/` and `mseg/dataset_lists/`.
    """
    environ = os.environ if environ is None else environ
    tried: list[str] = []
    candidates: list[tuple[str, Path]] = []
    if explicit is not None:
        candidates.append(("--mseg-api", Path(explicit)))
    elif environ.get(ENV_VAR):
        candidates.append((ENV_VAR, Path(environ[ENV_VAR])))
    else:
        spec = importlib.util.find_spec("mseg")
        if spec is not None and spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                candidates.append(("installed mseg package", Path(location).parent))
    for source, path in candidates:
        path = path.expanduser().resolve()
        if _looks_like_api_root(path):
            return path
        tried.append(f"{source}={path}")
    detail = f" (tried {', '.join(tried)}: no {' and '.join(_MARKERS)} inside)" if tried else ""
    raise UserError(
        f"cannot find the mseg-api data files{detail}. Pass --mseg-api DIR (the mseg-api "
        f"repository root, which holds mseg/class_remapping_files/ and mseg/dataset_lists/), "
        f"or set {ENV_VAR}, or `pip install -e` your mseg-api checkout."
    )


def master_tsv_path(api_root: Path) -> Path:
    """Path of MSeg_master.tsv inside an mseg-api root."""
    return api_root / "mseg" / "class_remapping_files" / "MSeg_master.tsv"


def dataset_lists_dir(api_root: Path) -> Path:
    """Folder that holds one sub-folder of names and lists per taxonomy name."""
    return api_root / "mseg" / "dataset_lists"
