"""The naive baseline: FastAPI, one ONNX Runtime CPU-provider call per request, no batching, no pipelining.

python bench/naive_server.py --model-dir bench/.models/resnet50/1 --port 8001
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request
from PIL import Image

from model_repository import read_manifest
from model_repository.preprocess import preprocess_image


def build(model_dir: Path) -> FastAPI:
    manifest = read_manifest(model_dir)
    session = ort.InferenceSession(str(model_dir / manifest.file), providers=["CPUExecutionProvider"])
    app = FastAPI()

    @app.post("/classify")
    async def classify(request: Request) -> dict:
        img = Image.open(io.BytesIO(await request.body())).convert("RGB")
        x = preprocess_image(img, manifest.preprocess)[None]
        logits = session.run(None, {manifest.input.name: x})[0][0]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = np.argsort(-probs)[:5]
        return {"predictions": [{"label": manifest.labels[i], "score": float(probs[i])} for i in top]}

    return app


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--port", type=int, default=8001)
    args = p.parse_args()
    uvicorn.run(build(args.model_dir), host="127.0.0.1", port=args.port, log_level="warning")
