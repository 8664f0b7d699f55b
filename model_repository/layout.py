"""The model repository on disk: ``<repository>/<name>/<version>/``, versions appearing atomically."""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .manifest import MANIFEST_FILE


def list_model_names(repository: str | Path) -> list[str]:
    root = Path(repository)
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and list_versions(root, d.name))


def list_versions(repository: str | Path, name: str) -> list[int]:
    """Published versions (positive integer directories holding a model.json), ascending."""
    model_dir = Path(repository) / name
    if not model_dir.is_dir():
        return []
    versions = [
        int(d.name)
        for d in model_dir.iterdir()
        if d.is_dir() and d.name.isdigit() and int(d.name) > 0 and (d / MANIFEST_FILE).is_file()
    ]
    return sorted(versions)


def version_dir(repository: str | Path, name: str, version: int) -> Path:
    """The one place a version's directory is named: ``<repository>/<name>/<version>``."""
    return Path(repository) / name / str(version)


def _next_free_version(model_dir: Path) -> int:
    taken = [int(d.name) for d in model_dir.iterdir() if d.name.isdigit()]
    return max(taken, default=0) + 1


@contextmanager
def staging_directory(repository: str | Path, name: str) -> Iterator[Path]:
    """A private directory in the repository root to build a version in; removed if still there at exit.

    Hidden (``.staging-*``), so it is never listed as a model; nothing under ``repository/name`` changes
    until :func:`publish` renames it into place.
    """
    root = Path(repository)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=root))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, repository: str | Path, name: str, finalize: Callable[[Path, int], None]) -> int:
    """Give ``staging`` the next version number and rename it into place in one step.

    ``finalize(staging, version)`` writes what depends on the number (the manifest) before the rename.
    A lock file serialises concurrent exporters; readers never see a partial version, because a version
    directory appears only by ``rename`` of a complete directory on the same filesystem.
    """
    root = Path(repository)
    with open(root / ".publish.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        model_dir = root / name
        model_dir.mkdir(exist_ok=True)
        version = _next_free_version(model_dir)
        finalize(staging, version)
        staging.chmod(0o755)  # mkdtemp makes it private; servers may run as another user
        staging.rename(version_dir(root, name, version))
    return version
