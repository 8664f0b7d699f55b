"""The constructed solution (paper section 3.1): deepened nets compute the shallow net's function."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.data import CIFAR10_MEAN, CIFAR10_STD
from training.models import deepen, get_model

pytestmark = pytest.mark.full  # torch, or the export extra

FIXTURES = Path(__file__).parent / "fixtures" / "cifar10"


def real_images() -> torch.Tensor:
    """The committed CIFAR-10 test images, normalised: (20, 3, 32, 32)."""
    arrays = [np.asarray(Image.open(p).convert("RGB"), np.float32) / 255 for p in sorted(FIXTURES.glob("*.jpg"))]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return (x - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)


def briefly_trained(name: str) -> torch.nn.Module:
    """A 20-layer net with weights and BatchNorm statistics moved away from their initial values."""
    torch.manual_seed(0)
    model = get_model(name)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = real_images()
    y = torch.arange(20) // 2
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize(("name", "deeper_name"), [("resnet20", "resnet56"), ("plain20", "plain56")])
def test_deepened_net_matches_the_shallow_one_on_real_images(name, deeper_name):
    shallow = briefly_trained(name)
    deeper = deepen(shallow, 56).eval()
    assert sum(p.numel() for p in deeper.parameters()) == sum(p.numel() for p in get_model(deeper_name).parameters())
    assert len(deeper.layer1) == 9 and deeper.depth == 56
    x = real_images()
    assert len(x) == 20
    with torch.no_grad():
        torch.testing.assert_close(deeper(x), shallow(x), rtol=0, atol=1e-5)
        # The added blocks matter: breaking one changes the output.
        deeper.layer2[5].bn2.weight.add_(0.5)
        assert not torch.allclose(deeper(x), shallow(x), atol=1e-3)


def test_deepen_rejects_bad_depths():
    with pytest.raises(ValueError, match="6n\\+2"):
        deepen(get_model("resnet20"), 52)
    with pytest.raises(ValueError):
        deepen(get_model("resnet56"), 20)
    with pytest.raises(TypeError):
        deepen(get_model("resnet18"), 34)
