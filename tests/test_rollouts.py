"""Rollouts in one process: evaluation sets (format, sampling, replacement), the gate, the canary's routing and
verdict, the rollout state file, and the admin routes' refusals (tests/test_rollouts_process.py: under load)."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from export.errors import ExportError
from export.evaluation_set import plan_evaluation_set, stratified_sample
from model_repository import ManifestError, read_manifest
from model_repository.evaluation import read_evaluation_set, write_evaluation_set
from service.errors import StateNotSaved
from service.evaluation import Score, gate
from service.rollouts import Arm, Canary, ModelRollout, RolloutStore, canary_bucket
from tests.conftest import TOY_CLASSES, client_for, export_random_model, jpeg_bytes, make_image_folder, republish


# ---------------------------------------------------------------------- evaluation sets
def test_an_evaluation_set_round_trips_and_refuses_a_damaged_file(tmp_path):
    images = [jpeg_bytes(seed=i) for i in range(5)]
    path = write_evaluation_set(tmp_path, "toy", images, [0, 1, 2, 0, 1], TOY_CLASSES, {"images": "made here"})
    stored = read_evaluation_set(tmp_path, "toy")
    assert stored.images == images and stored.labels.tolist() == [0, 1, 2, 0, 1] and stored.manifest.labels == TOY_CLASSES
    assert read_evaluation_set(tmp_path, "other") is None  # no set: promoted as before
    data = path.parent / stored.manifest.file
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(ManifestError, match="sha256"):
        read_evaluation_set(tmp_path, "toy")


def test_replacing_an_evaluation_set_swaps_whole_files(tmp_path):
    write_evaluation_set(tmp_path, "toy", [b"a" * 10], [0], TOY_CLASSES, {})
    first = read_evaluation_set(tmp_path, "toy").manifest.file
    write_evaluation_set(tmp_path, "toy", [b"b" * 10, b"c"], [1, 2], TOY_CLASSES, {})
    stored = read_evaluation_set(tmp_path, "toy")
    assert stored.manifest.file != first and stored.images == [b"b" * 10, b"c"]
    names = sorted(p.name for p in (tmp_path / "toy" / "evaluation").iterdir())
    assert names == ["evaluation.json", stored.manifest.file]  # the old data file is gone, no temporary left


def test_the_sample_is_class_stratified_seeded_and_recorded(tmp_path):
    by_class = {c: {f"{i:04d}.jpg": bytes([i]) for i in range(50)} for c in TOY_CLASSES}
    images, labels, chosen = stratified_sample(by_class, TOY_CLASSES, 31, seed=0)
    assert len(images) == 31 and sorted(np.bincount(labels).tolist()) == [10, 10, 11]
    assert all(files == sorted(files) and len(set(files)) == len(files) for files in chosen.values())
    assert stratified_sample(by_class, TOY_CLASSES, 31, seed=0)[2] == chosen  # the same seed: the same images
    assert stratified_sample(by_class, TOY_CLASSES, 31, seed=1)[2] != chosen
    with pytest.raises(ExportError, match="not among the model's labels"):
        stratified_sample({**by_class, "zebra": {"a.jpg": b"x"}}, TOY_CLASSES, 9, 0)
    with pytest.raises(ExportError, match="has 50 images"):
        stratified_sample(by_class, TOY_CLASSES, 300, 0)


def test_the_exporter_keeps_a_stored_set_unless_told_to_replace_it(tmp_path):
    folder = make_image_folder(tmp_path / "data", {"test": 8})
    repo = tmp_path / "repo"
    path = plan_evaluation_set(folder, repo, "toy", TOY_CLASSES, count=12).write()
    source = json.loads(path.read_text())["source"]
    assert source["seed"] == 0 and sum(len(f) for f in source["files"].values()) == 12
    assert plan_evaluation_set(folder, repo, "toy", TOY_CLASSES, count=12).unchanged
    with pytest.raises(ExportError, match="--replace-evaluation"):
        plan_evaluation_set(folder, repo, "toy", TOY_CLASSES, count=9)
    plan_evaluation_set(folder, repo, "toy", TOY_CLASSES, count=9, replace=True).write()
    assert read_evaluation_set(repo, "toy").manifest.count == 9


@pytest.mark.full  # exports a version (torch)
def test_export_writes_the_set_before_the_version_it_scores(tmp_path):
    folder = make_image_folder(tmp_path / "data", {"test": 4})
    version = export_random_model(tmp_path / "repo", "toy", evaluation_images=folder, evaluation_count=6)
    stored = read_evaluation_set(tmp_path / "repo", "toy")
    assert stored.manifest.count == 6 and stored.manifest.labels == read_manifest(version).labels


# ---------------------------------------------------------------------- the gate and the canary
def score(top1: float, sha: str = "a" * 64) -> Score:
    return Score(top1, 1000, sha, 1.0)


def test_the_gate_allows_the_tolerance_and_no_more():
    assert gate(score(91.1), score(91.6), 0.5)[0]  # 0.5 points below: promoted
    assert gate(score(92.0), score(91.6), 0.5)[0]
    passed, why = gate(score(89.6), score(91.6), 0.5)
    assert not passed and "89.60%" in why and "91.60%" in why
    assert gate(score(10.0), score(91.6, sha="b" * 64), 0.5)[0]  # scored on another set: nothing to compare
    assert gate(score(10.0), None, 0.5)[0]


def test_a_request_id_always_lands_in_the_same_place_and_shares_are_kept():
    ids = [f"{i:032x}" for i in range(20_000)]
    assert [canary_bucket(i) for i in ids[:100]] == [canary_bucket(i) for i in ids[:100]]
    share = sum(canary_bucket(i) < 20 for i in ids) / len(ids)
    assert 0.19 < share < 0.21


class _Version:
    def __init__(self, version: int) -> None:
        self.version = version


def canary_after(candidate: list[tuple[bool, float]], serving: list[tuple[bool, float]], requests: int = 250) -> Canary:
    canary = Canary(_Version(4), 3, 20, requests=requests, max_s=600)
    for ok, seconds in candidate:
        canary.record(4, ok, seconds)
    for ok, seconds in serving:
        canary.record(3, ok, seconds)
    return canary


def test_a_canary_is_promoted_unless_its_errors_or_tail_latency_are_worse():
    same = canary_after([(True, 0.01)] * 50, [(True, 0.01)] * 200)
    assert same.due() and same.verdict(0.01, 1.5)[0]
    erring = canary_after([(True, 0.01)] * 45 + [(False, 0.01)] * 5, [(True, 0.01)] * 200)
    promote, why = erring.verdict(0.01, 1.5)
    assert not promote and "error rate 10.00%" in why
    slow = canary_after([(True, 0.01)] * 40 + [(True, 0.05)] * 10, [(True, 0.01)] * 200)
    promote, why = slow.verdict(0.01, 1.5)
    assert not promote and "p99" in why
    few = canary_after([(True, 0.05)] * 5, [(True, 0.01)] * 200, requests=205)  # too few answers to compare tails
    assert few.verdict(0.01, 1.5)[0]
    assert not canary_after([(True, 0.01)] * 3, [(True, 0.01)] * 6).due()  # neither enough requests nor enough time
    canary_after([], [], requests=1).record(7, True, 0.01)  # a version neither side: ignored
    assert Arm().error_rate == 0 and Arm().p99() is None


# ---------------------------------------------------------------------- the state file
def test_the_rollout_file_is_replaced_whole_and_a_failed_write_changes_nothing(tmp_path):
    store = RolloutStore(tmp_path / "rollouts.json")
    record = store.of("toy")
    record.serve(3)
    record.held_back[4] = "rolled back by an operator"
    store.save("toy", record)
    again = RolloutStore(tmp_path / "rollouts.json").of("toy")
    assert again.serving == 3 and again.history == [3] and again.held_back == {4: "rolled back by an operator"}
    assert [p.name for p in tmp_path.iterdir()] == ["rollouts.json"]  # no temporary file left
    blocked = RolloutStore(tmp_path / "missing" / "rollouts.json")
    changed = ModelRollout(serving=5)
    with pytest.raises(StateNotSaved, match="could not be written"):
        blocked.save("toy", changed)
    assert blocked.of("toy").serving is None


def test_a_damaged_rollout_file_is_ignored_with_a_log_line(tmp_path, caplog):
    (tmp_path / "rollouts.json").write_text("{not json")
    with caplog.at_level(logging.ERROR, logger="resnet_serve"):
        assert RolloutStore(tmp_path / "rollouts.json").of("toy").serving is None
    assert "ignoring rollout state" in caplog.text


def test_history_keeps_the_last_serving_versions_once_each():
    record = ModelRollout()
    for v in (1, 2, 3, 2, *range(4, 15)):
        record.serve(v)
    assert record.history == list(range(5, 15)) and record.serving == 14


# ---------------------------------------------------------------------- the admin routes (in process)
@pytest.fixture
def repository(toy_repository, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(toy_repository / "toy", repo / "toy")
    return repo


def test_admin_routes_need_the_token_when_one_is_set(repository):
    with client_for(repository, admin_token="s3cret") as c:
        assert c.post("/admin/models/toy/rollback").status_code == 401
        bad = c.post("/admin/models/toy/pin", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 403 and bad.json()["error"]["code"] == "forbidden"
        ok = c.post("/admin/models/toy/pin", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["model"]["rollout"]["pinned"] == 1


def test_admin_routes_refuse_what_cannot_be_done_with_typed_errors(repository):
    with client_for(repository) as c:
        nothing = c.post("/admin/models/toy/rollback")
        assert nothing.status_code == 409 and nothing.json()["error"]["code"] == "conflict"
        assert c.post("/admin/models/ghost/rollback").status_code == 404
        assert c.post("/admin/models/toy/promote", json={"version": 9}).status_code == 404
        assert c.post("/admin/models/toy/promote", json={}).status_code == 422
        assert c.post("/admin/models/toy/promote", json={"version": "x"}).status_code == 422
        assert c.put("/admin/models/toy/canary", json={"percent": 101}).status_code == 422
        share = c.put("/admin/models/toy/canary", json={"percent": 20})
        assert share.status_code == 200 and share.json()["model"]["rollout"]["canary_percent"] == 20
        assert json.loads((repository / "rollouts.json").read_text())["models"]["toy"]["canary_percent"] == 20


def test_an_admin_change_that_cannot_be_saved_is_not_made(repository, tmp_path):
    state_file = tmp_path / "no-such-dir" / "rollouts.json"
    with client_for(repository, rollout_state_file=state_file) as c:
        refused = c.post("/admin/models/toy/pin")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "state_not_saved"
        assert c.get("/v1/models/toy").json()["rollout"]["pinned"] is None


def test_a_broken_version_promoted_by_hand_is_a_conflict_and_nothing_changes(repository):
    with client_for(repository) as c:
        broken = repository / "toy" / "2"
        shutil.copytree(repository / "toy" / "1", broken)
        manifest = json.loads((broken / "model.json").read_text())
        (broken / "model.json").write_text(json.dumps({**manifest, "version": 2}))
        with open(broken / "model.onnx", "ab") as fh:
            fh.write(b"corrupt")
        refused = c.post("/admin/models/toy/promote", json={"version": 2})
        assert refused.status_code == 409 and "sha256" in refused.json()["error"]["message"]
        assert c.get("/v1/models/toy").json()["serving_version"] == 1


def test_a_restart_gates_a_version_newer_than_the_recorded_one_even_without_polling(repository):
    """Start-up serves the recorded version (readiness does not wait for a gate), then its first round gates what
    is newer: with poll_interval_s 0 there is no later round to do it."""
    import time

    RolloutStore(repository / "rollouts.json").save("toy", ModelRollout(serving=1, history=[1]))
    republish(repository, "toy", 1)  # version 2, appeared while the server was down
    with client_for(repository) as c:
        deadline = time.monotonic() + 30
        while c.get("/v1/models/toy").json()["serving_version"] != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.get("/v1/models/toy").json()["serving_version"] == 2
    assert RolloutStore(repository / "rollouts.json").of("toy").history == [1, 2]
