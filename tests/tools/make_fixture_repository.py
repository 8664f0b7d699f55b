"""Regenerate tests/fixtures/repository: the tiny model repository the service's tests run on without torch.

    .venv/bin/python tests/tools/make_fixture_repository.py     # needs the export extra (torch); commit the result

One model, "toy": our resnet20 with random weights (seed 0), 3 classes (red, green, blue), 32x32 inputs with
ImageNet normalisation, as tests/conftest.py's ``export_random_model`` exports it; its golden data included.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.conftest import FIXTURE_REPOSITORY, export_random_model  # noqa: E402


def main() -> int:
    shutil.rmtree(FIXTURE_REPOSITORY, ignore_errors=True)
    version = export_random_model(FIXTURE_REPOSITORY, "toy", "resnet20")
    (FIXTURE_REPOSITORY / ".publish.lock").unlink(missing_ok=True)
    print(f"wrote {version.relative_to(ROOT)}: {sorted(p.name for p in version.iterdir())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
