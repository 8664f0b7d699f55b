"""Re-check a published model version: ``python -m export.validate REPO/NAME/VERSION``.

Schema, sha256 of the files, onnx.checker (full check), ONNX Runtime loads it, and a forward pass on a
batch of 3 (or the static batch) gives the declared output shape.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from model_repository import ManifestError, read_manifest, verify_files


def validate(version_dir: Path) -> list[str]:
    """The checks passed, in order; raises ManifestError (or RuntimeError) on the first failure."""
    import onnx
    import onnxruntime as ort

    done = []
    manifest = read_manifest(version_dir)
    done.append("schema")
    verify_files(version_dir, manifest)
    done.append("sha256")
    model_path = version_dir / manifest.file
    try:
        onnx.checker.check_model(str(model_path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ManifestError(f"{model_path}: onnx.checker: {exc}") from None
    done.append("onnx.checker")
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    done.append("onnxruntime load")
    batch = manifest.static_batch or 3
    x = np.random.default_rng(0).standard_normal((batch, 3, manifest.input_size, manifest.input_size)).astype(np.float32)
    (out,) = session.run([manifest.output.name], {manifest.input.name: x})
    expected = (batch, manifest.num_classes)
    if out.shape != expected or not np.isfinite(out).all():
        raise ManifestError(
            f"{model_path}: forward pass gave shape {out.shape} (finite: {np.isfinite(out).all()}), expected {expected}"
        )
    done.append(f"forward {list(x.shape)} -> {list(out.shape)}")
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("version_dir", type=Path, help="REPO/NAME/VERSION")
    args = p.parse_args(argv)
    try:
        done = validate(args.version_dir)
    except (ManifestError, RuntimeError) as exc:  # onnxruntime raises RuntimeError subclasses
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    print(f"ok: {args.version_dir}: " + ", ".join(done))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
