"""The service's answers against PyTorch itself: the whole path (decode, preprocess, ONNX Runtime, softmax) on a
photo-sized image gives the probabilities the PyTorch network gives (needs torch: marked ``full``)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from model_repository import read_manifest
from tests.conftest import client_for, export_random_model, jpeg_bytes
from training.models import get_model

pytestmark = pytest.mark.full


def test_probabilities_match_pytorch_on_a_photo_sized_image(tmp_path):
    """ImageNet-style preprocessing (resize 256, crop 224) on a 500x375 image: service vs PyTorch within 1e-3."""
    repo = tmp_path / "repo"
    labels = [f"class{i}" for i in range(10)]
    version = export_random_model(repo, "r18", "resnet18", labels=labels, resize=256, crop=224, seed=3)
    manifest = read_manifest(version)
    torch.manual_seed(3)
    model = get_model("resnet18", num_classes=10).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.uniform_(-0.2, 0.2)
    data = jpeg_bytes((500, 375), seed=7)
    pil = Image.open(io.BytesIO(data)).convert("RGB")
    tf = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(manifest.preprocess.mean, manifest.preprocess.std),
        ]
    )
    with torch.no_grad():
        expected = torch.softmax(model(tf(pil)[None]), 1)[0].numpy()
    with client_for(repo, precision="fp32") as c:
        body = c.post("/classify?top_k=10", content=data, headers={"Content-Type": "image/jpeg"}).json()
    got = np.zeros(10)
    for p in body["predictions"]:
        got[p["index"]] = p["score"]
    np.testing.assert_allclose(got, expected, atol=1e-3)
