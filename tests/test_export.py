"""The exporter (python -m export: export/cli.py) and export/validate.py: checkpoints and torchvision weights to a repository."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import threading
import urllib.error
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision

from export import pipeline, sources
from export.cli import main as export_main
from export.errors import ExportError
from export.pipeline import ExportOptions, export_to_repository
from export.sources import from_checkpoint, from_random, from_torchvision
from export.validate import main as validate_main
from model_repository import (
    ManifestError,
    list_model_names,
    list_versions,
    publish,
    read_manifest,
    sha256_file,
    staging_directory,
    verify_files,
)
from tests.conftest import train_argv
from training.config import get_args_parser
from training.train import main as train_main

pytestmark = pytest.mark.full  # torch, or the export extra


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real (short) training run's best.pt on the toy CIFAR-like data."""
    from tests.conftest import make_image_folder

    root = tmp_path_factory.mktemp("export_ckpt")
    data = make_image_folder(root / "data", {"train": 32, "test": 8})
    out = root / "run"
    argv = train_argv(data, out, "--epochs", "2", "--cache-dir", str(root / "cache"))
    train_main(get_args_parser().parse_args(argv))
    return out / "best.pt"


@pytest.fixture(scope="module")
def resnet50_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet50-random.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50().state_dict(), path)
    return path


def test_checkpoint_export_writes_a_valid_version(checkpoint, tmp_path):
    repo = tmp_path / "models"
    assert export_main(["--checkpoint", str(checkpoint), "--name", "toy-resnet20", "--repository", str(repo)]) == 0
    assert list_model_names(repo) == ["toy-resnet20"] and list_versions(repo, "toy-resnet20") == [1]
    version = repo / "toy-resnet20" / "1"
    manifest = read_manifest(version)
    verify_files(version, manifest)
    assert manifest.arch == "resnet20" and manifest.labels == ["blue", "green", "red"]
    assert manifest.input.shape == [-1, 3, 32, 32] and manifest.output.shape == [-1, 3]
    assert manifest.preprocess.resize == 32 and manifest.preprocess.crop == 32
    ckpt = torch.load(checkpoint, weights_only=True)
    assert manifest.metrics["test_top1_accuracy"] == pytest.approx(100 - ckpt["metrics"][-1]["test_error"], abs=1e-3)
    assert manifest.source["checkpoint_sha256"] == __import__("hashlib").sha256(checkpoint.read_bytes()).hexdigest()
    assert manifest.source["training_args"]["model"] == "resnet20"
    assert manifest.source["training_command"].startswith("python training/train.py --model resnet20 ")
    parity = manifest.parity
    assert parity["max_abs_logit_diff"] <= 1e-4 and parity["top1_agreement_pct"] == 100.0 and parity["batch_sizes"] == [1, 8]
    ops = {n.op_type for n in onnx.load(str(version / "model.onnx")).graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 7, 64):
        (out,) = session.run(None, {"input": np.zeros((batch, 3, 32, 32), np.float32)})
        assert out.shape == (batch, 3)
    golden = np.load(version / "golden.npz")
    (out,) = session.run(None, {"input": golden["inputs"]})
    np.testing.assert_allclose(out, golden["logits"], atol=1e-4)
    assert not (version / "checkpoint.pt").exists()
    # A second export takes the next version; --with-checkpoint bundles the weights-only checkpoint.
    argv = ["--checkpoint", str(checkpoint), "--name", "toy-resnet20", "--repository", str(repo), "--with-checkpoint"]
    assert export_main(argv) == 0
    second = repo / "toy-resnet20" / "2"
    assert list_versions(repo, "toy-resnet20") == [1, 2] and read_manifest(second).version == 2
    bundled = torch.load(second / "checkpoint.pt", weights_only=True)
    assert "optimizer" not in bundled and "rng" not in bundled and bundled["args"] == ckpt["args"]
    assert all(torch.equal(bundled["model"][k], v) for k, v in ckpt["model"].items())
    assert read_manifest(second).source["export"]["checkpoint_file"]["sha256"] == sha256_file(second / "checkpoint.pt")
    # ... from which the version can be exported again (e.g. quantised later).
    assert export_main(["--checkpoint", str(second / "checkpoint.pt"), "--name", "again", "--repository", str(repo)]) == 0
    np.testing.assert_allclose(np.load(repo / "again" / "1" / "golden.npz")["logits"], golden["logits"], atol=1e-5)


def test_manifest_names_the_run_a_fine_tuned_checkpoint_started_from(checkpoint, tmp_path):
    """A model trained in two runs (--init-from) records both: each checkpoint's sha256, command and result."""
    data = Path(torch.load(checkpoint, weights_only=True)["args"]["data_dir"])
    out = tmp_path / "second"
    argv = train_argv(data, out, "--epochs", "1", "--init-from", str(checkpoint), "--cache-dir", str(tmp_path / "cache"))
    train_main(get_args_parser().parse_args(argv))
    repo = tmp_path / "models"
    assert export_main(["--checkpoint", str(out / "last.pt"), "--name", "two-runs", "--repository", str(repo)]) == 0
    source = read_manifest(repo / "two-runs" / "1").source
    assert f"--init-from {checkpoint}" in source["training_command"]
    first = source["init_from"]
    assert first["checkpoint"] == str(checkpoint) and first["checkpoint_sha256"] == sha256_file(checkpoint)
    first_ckpt = torch.load(checkpoint, weights_only=True)
    assert first["test_top1_accuracy"] == pytest.approx(100 - first_ckpt["metrics"][-1]["test_error"], abs=1e-3)
    assert first["training_command"].startswith("python training/train.py --model resnet20 ") and "init_from" not in first
    # The starting checkpoint gone by export time: its path is kept, marked as not found.
    moved = tmp_path / "moved.pt"
    shutil.copy(out / "last.pt", moved)
    ckpt = torch.load(moved, weights_only=True)
    ckpt["args"]["init_from"] = str(tmp_path / "deleted.pt")
    torch.save(ckpt, moved)
    assert export_main(["--checkpoint", str(moved), "--name", "orphan", "--repository", str(repo)]) == 0
    missing = {"checkpoint": str(tmp_path / "deleted.pt"), "found_at_export": False}
    assert read_manifest(repo / "orphan" / "1").source["init_from"] == missing


def test_validate_cli(checkpoint, tmp_path):
    repo = tmp_path / "models"
    export_main(["--checkpoint", str(checkpoint), "--name", "m", "--repository", str(repo)])
    version = repo / "m" / "1"
    proc = subprocess.run([sys.executable, "-m", "export.validate", str(version)], capture_output=True, text=True)
    assert proc.returncode == 0 and "forward [3, 3, 32, 32] -> [3, 3]" in proc.stdout
    with open(version / "model.onnx", "ab") as fh:
        fh.write(b"tampered")
    assert validate_main([str(version)]) == 1


def test_torchvision_export_with_local_weights(resnet50_weights, tmp_path):
    repo = tmp_path / "models"
    photos = tmp_path / "photos"
    photos.mkdir()
    from tests.conftest import toy_image

    rng = np.random.default_rng(1)
    for i in range(3):
        toy_image(i, rng, size=300).resize((400, 300)).save(photos / f"p{i}.jpg")
    argv = [
        "--torchvision",
        "resnet50",
        "--weights",
        "IMAGENET1K_V2",
        "--weights-file",
        str(resnet50_weights),
        "--name",
        "resnet50",
        "--repository",
        str(repo),
        "--parity-images",
        str(photos),
    ]
    assert export_main(argv) == 0
    version = repo / "resnet50" / "1"
    manifest = read_manifest(version)
    assert manifest.arch == "resnet50" and len(manifest.labels) == 1000
    assert manifest.labels[0] == "tench" and manifest.labels[-1] == "toilet tissue"
    assert (manifest.preprocess.resize, manifest.preprocess.crop) == (232, 224)  # V2 weights' own preprocessing
    assert manifest.preprocess.mean == pytest.approx((0.485, 0.456, 0.406))
    assert manifest.source["weights"] == "ResNet50_Weights.IMAGENET1K_V2"
    assert manifest.metrics["imagenet1k_top1_accuracy_reported"] == pytest.approx(80.858)
    assert manifest.parity["inputs"].startswith("3 images from") and manifest.parity["max_abs_logit_diff"] <= 1e-4
    # Our network with torchvision's weights gives torchvision's outputs through ONNX Runtime.
    reference = torchvision.models.resnet50()
    reference.load_state_dict(torch.load(resnet50_weights, weights_only=True))
    x = torch.randn(2, 3, 224, 224)
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(out, reference.eval()(x).numpy(), atol=1e-3)
    assert validate_main([str(version)]) == 0


def test_offline_download_fails_fast_naming_weights_file(monkeypatch):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(ExportError, match="--weights-file"):
        from_torchvision("resnet50", "IMAGENET1K_V2")
    with pytest.raises(ExportError, match="no torchvision weights 'V9'"):
        from_torchvision("resnet50", "V9")


def test_fp16_and_static_batch_exports(checkpoint, tmp_path):
    repo = tmp_path / "models"
    src = from_checkpoint(checkpoint)
    fp16 = read_manifest(export_to_repository(src, repo, "half", ExportOptions(fp16=True)))
    assert fp16.precision == "fp16" and fp16.parity["max_abs_prob_diff"] <= 1e-2
    assert fp16.parity["top1_agreement_pct"] >= 99
    static = export_to_repository(src, repo, "static", ExportOptions(static_batch=4))
    manifest = read_manifest(static)
    assert manifest.input.shape == [4, 3, 32, 32] and manifest.static_batch == 4
    session = ort.InferenceSession(str(static / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == 4
    skipped = read_manifest(export_to_repository(src, repo, "noparity", ExportOptions(parity=False)))
    assert skipped.parity == {"skipped": True, "reason": "--no-parity"}
    slim = read_manifest(export_to_repository(src, repo, "slim", ExportOptions(simplify=True)))
    assert slim.source["export"]["simplify"]["tool"] == "onnxslim"


def test_failed_export_leaves_nothing(checkpoint, tmp_path, monkeypatch):
    repo = tmp_path / "models"

    def failing_parity(*args, **kwargs):
        raise ExportError("parity failed (simulated)")

    monkeypatch.setattr(pipeline, "check_parity", failing_parity)
    assert export_main(["--checkpoint", str(checkpoint), "--name", "broken", "--repository", str(repo)]) == 1
    assert list_model_names(repo) == []
    assert not (repo / "broken").exists()
    assert [p.name for p in repo.iterdir() if p.name.startswith(".staging")] == []
    monkeypatch.undo()
    # Only a training checkpoint can be bundled (torchvision weights have none).
    no_checkpoint = dataclasses.replace(from_checkpoint(checkpoint), checkpoint=None)
    with pytest.raises(ExportError, match="--with-checkpoint needs"):
        export_to_repository(no_checkpoint, repo, "tv", ExportOptions(with_checkpoint=True))


def test_concurrent_publishes_get_distinct_versions(tmp_path):
    """Several exporters publishing at once each get their own version; none sees another's files."""
    repo = tmp_path / "models"
    results, errors = [], []
    barrier = threading.Barrier(4)

    def run(i):
        try:
            with staging_directory(repo, "race") as staging:
                (staging / "payload").write_text(str(i))
                barrier.wait()
                version = publish(staging, repo, "race", lambda d, v: (d / "model.json").write_text(str(v)))
            results.append((i, version))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(v for _, v in results) == [1, 2, 3, 4]
    for i, version in results:
        assert (repo / "race" / str(version) / "payload").read_text() == str(i)
        assert (repo / "race" / str(version) / "model.json").read_text() == str(version)
    assert list_versions(repo, "race") == [1, 2, 3, 4]
    assert oct((repo / "race" / "1").stat().st_mode & 0o777) == "0o755"


def test_manifest_schema_rejects_wrong_files(checkpoint, tmp_path):
    repo = tmp_path / "models"
    export_main(["--checkpoint", str(checkpoint), "--name", "m", "--repository", str(repo)])
    good = repo / "m" / "1"
    original = json.loads((good / "model.json").read_text())

    def broken(mutate, match):
        target = tmp_path / "broken" / "1"
        shutil.rmtree(target.parent, ignore_errors=True)
        shutil.copytree(good, target)
        data = json.loads(json.dumps(original))
        mutate(data)
        (target / "model.json").write_text(json.dumps(data))
        with pytest.raises(ManifestError, match=match):
            read_manifest(target)

    broken(lambda d: d["labels"].pop(), "labels for 3 outputs")
    broken(lambda d: d.pop("sha256"), "sha256")
    broken(lambda d: d.update(version=2), "does not match directory")
    broken(lambda d: d["input"].update(shape=[-1, 1, 32, 32]), "input shape")
    broken(lambda d: d["preprocess"].update(crop=64), "crop")
    broken(lambda d: d.update(unexpected=True), "unexpected")
    broken(lambda d: d.update(file="../escape.onnx"), "plain file name")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(tmp_path / "bad")
    with pytest.raises(ManifestError, match="no such file"):
        read_manifest(tmp_path)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        from_checkpoint(tmp_path / "missing.pt")
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ExportError, match="missing arch"):
        from_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ExportError, match="not a training checkpoint"):
        from_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(ExportError, match="--torchvision takes"):
        sources.torchvision_weights("resnet20", None)


def test_int8_export_is_quantized_and_checked(checkpoint, tmp_path):
    from tests.conftest import make_image_folder

    images = make_image_folder(tmp_path / "calib", {"x": 8})  # 3 classes x 8 real-looking toy images
    calibration = tmp_path / "flat"
    calibration.mkdir()
    for i, p in enumerate(sorted(images.rglob("*.png"))):
        shutil.copy(p, calibration / f"{i}.png")
    with pytest.raises(ExportError, match="--calibration-images"):
        export_to_repository(from_checkpoint(checkpoint), tmp_path / "m", "q", ExportOptions(int8=True))
    version = export_to_repository(
        from_checkpoint(checkpoint), tmp_path / "m", "q", ExportOptions(int8=True, calibration_images=calibration)
    )
    manifest = read_manifest(version)
    assert manifest.precision == "int8"
    ops = {n.op_type for n in onnx.load(str(version / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert manifest.parity["decisive_top1_agreement_pct"] >= 95 and manifest.parity["max_abs_prob_diff"] <= 0.1
    assert "calibration" in manifest.source["export"]["quantization"]
    assert validate_main([str(version)]) == 0


def test_random_weights_export_for_load_tests(tmp_path, capsys):
    repo = tmp_path / "repo"
    fixtures = Path(__file__).parent / "fixtures" / "cifar10"
    argv = ["--random", "resnet20", "--name", "load", "--repository", str(repo), "--parity-images", str(fixtures)]
    assert export_main(argv) == 0
    assert export_main([*argv, "--seed", "1", "--num-classes", "3"]) == 0
    first, second = read_manifest(repo / "load" / "1"), read_manifest(repo / "load" / "2")
    assert (first.source["type"], first.source["seed"]) == ("random", 0) and first.labels == [f"class{i}" for i in range(10)]
    assert (first.preprocess.resize, first.preprocess.crop, first.preprocess.mean) == (32, 32, (0.4914, 0.4822, 0.4465))
    assert first.parity["top1_agreement_pct"] == 100.0 and "random weights" in first.metrics["note"]
    assert second.source["seed"] == 1 and second.num_classes == 3
    assert validate_main([str(repo / "load" / "2")]) == 0
    big = from_random("resnet50")  # ImageNet nets: 1000 classes, resize 256 -> crop 224
    assert (len(big.labels), big.preprocess.resize, big.preprocess.crop) == (1000, 256, 224)
    assert export_main(["--checkpoint", "x.pt", "--num-classes", "3", "--name", "n", "--repository", str(repo)]) == 1
    assert "--num-classes goes with --random" in capsys.readouterr().err
    with pytest.raises(ExportError, match="unknown model"):
        from_random("resnet21")
