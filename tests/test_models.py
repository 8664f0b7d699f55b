"""The paper's network family: shapes, gradients, parameter counts, torchvision parity, ONNX export."""

from __future__ import annotations

import pytest
import torch
import torchvision

from training.models import CIFAR_DEPTHS, IMAGENET_DEPTHS, PadShortcut, get_model, get_spec, list_models

pytestmark = pytest.mark.full  # torch, or the export extra


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_every_depth_residual_and_plain():
    names = set(list_models())
    for depth in list(CIFAR_DEPTHS) + list(IMAGENET_DEPTHS):
        assert {f"resnet{depth}", f"plain{depth}"} <= names
    assert len(names) == 20
    with pytest.raises(ValueError, match="unknown model 'resnet21'"):
        get_model("resnet21")
    with pytest.raises(ValueError, match="plain net"):
        get_model("plain20", shortcut="B")


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_finite(name):
    torch.manual_seed(0)
    spec = get_spec(name)
    model = get_model(name, num_classes=7)
    # ImageNet nets are fully convolutional up to the global pool: 64x64 keeps the test fast.
    size = 32 if spec.family == "cifar" else 64
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 7)
    out.logsumexp(1).sum().backward()
    assert torch.isfinite(out).all()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("depth", sorted(CIFAR_DEPTHS))
def test_cifar_parameter_counts_match_paper(depth):
    _, paper_millions, _ = CIFAR_DEPTHS[depth]
    residual, plain = get_model(f"resnet{depth}"), get_model(f"plain{depth}")
    # The paper rounds to two significant figures (0.27M, ..., 1.7M).
    assert float(f"{n_params(residual) / 1e6:.2g}") == paper_millions
    # Option A shortcuts are parameter-free: residual and plain nets are the same size.
    assert n_params(residual) == n_params(plain)
    assert n_params(get_model(f"resnet{depth}", shortcut="B")) > n_params(residual)


@pytest.mark.parametrize("depth", sorted(IMAGENET_DEPTHS))
def test_imagenet_parity_with_torchvision(depth):
    torch.manual_seed(depth)
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    # Non-trivial BatchNorm statistics so eval-mode outputs depend on every buffer.
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    ours = get_model(f"resnet{depth}").eval()
    assert n_params(ours) == n_params(reference)
    assert round(n_params(ours) / 1e6, 2) == IMAGENET_DEPTHS[depth][3]
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


def test_shortcut_options_change_structure():
    a, b, c = (get_model("resnet18", shortcut=s) for s in "ABC")
    plain = get_model("plain18")
    assert n_params(a) == n_params(plain) < n_params(b) < n_params(c)
    assert isinstance(a.layer2[0].downsample, PadShortcut)
    assert b.layer1[0].downsample is None and b.layer2[0].downsample is not None
    assert all(blk.downsample is not None for layer in (c.layer1, c.layer2) for blk in layer)
    assert all(blk.downsample is None and not blk.residual for blk in plain.modules() if hasattr(blk, "residual"))
    with pytest.raises(ValueError, match="shortcut"):
        get_model("resnet18", shortcut="D")


def test_option_a_pads_and_subsamples():
    x = torch.arange(2 * 4 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4, 4)
    y = PadShortcut(4, 8, 2)(x)
    assert y.shape == (2, 8, 2, 2)
    torch.testing.assert_close(y[:, :4], x[:, :, ::2, ::2])
    assert (y[:, 4:] == 0).all()


def test_bottleneck_variants_place_the_stride():
    v15, v1 = get_model("resnet50"), get_model("resnet50", variant="v1")
    assert v15.layer2[0].conv2.stride == (2, 2) and v15.layer2[0].conv1.stride == (1, 1)
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    assert n_params(v1) == n_params(v15)
    with pytest.raises(ValueError, match="variant"):
        get_model("resnet50", variant="v2")


def test_plain_net_is_the_residual_stack_without_shortcuts():
    res, plain = get_model("resnet20"), get_model("plain20")
    plain.load_state_dict(res.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(res.eval()(x), plain.eval()(x))


def test_init_and_zero_init_residual():
    model = get_model("resnet20", zero_init_residual=True)
    assert all((blk.bn2.weight == 0).all() for layer in (model.layer1, model.layer2, model.layer3) for blk in layer)
    assert (model.bn1.weight == 1).all() and (model.bn1.bias == 0).all()
    # He fan_out init: std = sqrt(2 / (out_channels * k * k)).
    w = get_model("resnet110").layer3[0].conv2.weight
    expected = (2 / (64 * 9)) ** 0.5
    assert abs(w.std().item() - expected) / expected < 0.05
    # With zero-initialised branches every block is an identity on its (non-negative) input.
    blk = model.layer1[1].eval()
    x = torch.rand(1, 16, 8, 8)
    torch.testing.assert_close(blk(x), x)


@pytest.mark.parametrize("name", ["resnet20", "resnet50"])
def test_onnx_export_runs_in_onnxruntime(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = get_model(name).eval()
    size = get_spec(name).input_size
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        model,
        (torch.randn(2, 3, size, size),),
        str(path),
        dynamo=True,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}},
        external_data=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, size, size)
    (out,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x), rtol=1e-4, atol=1e-4)
