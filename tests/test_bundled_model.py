"""The model bundled in models/ (what `make serve` and the container serve): valid, and right on real images."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from export.validate import validate
from model_repository import list_model_names, list_versions, read_manifest, sha256_file
from service.app import create_app
from service.settings import Settings
from tests.conftest import ROOT
from training.config import get_args_parser, resolve_args

pytestmark = pytest.mark.full  # torch, or the export extra

MODELS = ROOT / "models"
FIXTURES = Path(__file__).parent / "fixtures" / "cifar10"


def test_bundled_repository_has_a_cifar_model():
    names = list_model_names(MODELS)
    assert any(n.startswith("cifar10-") for n in names), names


@pytest.mark.parametrize("name,version", [(n, v) for n in list_model_names(MODELS) for v in list_versions(MODELS, n)])
def test_bundled_model_validates(name, version):
    version_dir = MODELS / name / str(version)
    checks = validate(version_dir)
    assert checks[:4] == ["schema", "sha256", "onnx.checker", "onnxruntime load"]
    manifest = read_manifest(version_dir)
    assert manifest.source.get("checkpoint_sha256") and manifest.source.get("training_args")
    assert manifest.source["training_command"].startswith(f"python training/train.py --model {manifest.arch} ")
    assert "test_top1_accuracy" in manifest.metrics
    bundled = manifest.source.get("export", {}).get("checkpoint_file")
    if bundled:  # the weights-only checkpoint committed beside the graph is the one recorded
        assert sha256_file(version_dir / bundled["file"]) == bundled["sha256"]
    start = manifest.source.get("init_from")
    if start:  # trained in several runs: the run it started from is named, with its checkpoint's hash
        assert start["checkpoint_sha256"] and start["training_command"].startswith("python training/train.py ")
        assert f"--init-from {start['checkpoint']}" in manifest.source["training_command"]


def test_bundled_model_classifies_real_cifar_images():
    name = next(n for n in list_model_names(MODELS) if n.startswith("cifar10-"))
    app = create_app(Settings(model_repository=MODELS, models=[name], poll_interval_s=0))
    correct = 0
    files = sorted(FIXTURES.glob("*.jpg"))
    with TestClient(app) as client:
        for f in files:
            r = client.post("/classify?top_k=1", content=f.read_bytes(), headers={"Content-Type": "image/jpeg"})
            assert r.status_code == 200, r.text
            correct += r.json()["predictions"][0]["label"] == f.stem.rsplit("_", 1)[0]
    # 20 real CIFAR-10 test images, two per class; chance is 10%.
    assert correct / len(files) >= 0.7, f"{correct}/{len(files)} correct"


def _script_train_args(script: Path) -> dict[str, object]:
    """The resolved train.py arguments of the one train.py command in a shell script (its variables as placeholders)."""
    text = script.read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if "training/train.py" in ln and not ln.lstrip().startswith("#")]
    words = shlex.split(line)
    argv = words[words.index("training/train.py") + 1 :]
    argv = [{"$DATA": "data.tar.gz", "$THREADS": "0", "$RUN": "run"}.get(w, w) for w in argv]
    return vars(resolve_args(get_args_parser().parse_args(argv)))


def test_make_default_model_reproduces_the_newest_bundled_version():
    # `make default-model` must retrain what is served: every argument that changes the weights matches the newest
    # bundled version's recorded training arguments (paths, device, threads and logging may differ).
    name = next(n for n in list_model_names(MODELS) if n.startswith("cifar10-"))
    newest = max(list_versions(MODELS, name))
    recorded = read_manifest(MODELS / name / str(newest)).source["training_args"]
    scripted = _script_train_args(ROOT / "docs" / "experiments" / "default-model.sh")
    incidental = {"data_dir", "cache_dir", "output_dir", "device", "threads", "resume", "no_progress", "eval_every"}
    differing = {k: (scripted.get(k), v) for k, v in recorded.items() if k not in incidental and scripted.get(k) != v}
    # train.py adds run facts that are not flags (world_size, total_steps, ...): all present in the script's run too
    differing = {k: pair for k, pair in differing.items() if k in scripted}
    assert not differing, f"default-model.sh (script, manifest): {differing}"
    assert scripted["amp"] == recorded["amp"] and scripted["model"] == recorded["model"] == "resnet56"
