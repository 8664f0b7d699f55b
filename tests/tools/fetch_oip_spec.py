"""Fetch the Open Inference Protocol's (KServe v2) OpenAPI document for the conformance test.

    python tests/tools/fetch_oip_spec.py build/open-inference-protocol/dataplane.json   # make test does this

The protocol's REST document (the "Data Plane" OpenAPI 3 of kserve/open-inference-protocol) is published on PyPI
inside Seldon MLServer's wheel (``mlserver/rest/openapi/dataplane.json``, the same schemas with ``{model_name}``
path templates); this downloads that one pinned wheel with pip, without its dependencies, and extracts the file.
Public repositories' files are not committed to this project, so the document is fetched rather than vendored.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "mlserver==1.7.1"
MEMBER = "mlserver/rest/openapi/dataplane.json"


def main() -> None:
    target = Path(sys.argv[1])
    if target.is_file():
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp, WHEEL], check=True)
        [wheel] = Path(tmp).glob("mlserver-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(MEMBER)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    print(f"{target}: {MEMBER} from {wheel.name}")


if __name__ == "__main__":
    main()
