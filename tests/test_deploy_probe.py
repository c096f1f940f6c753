"""backend="auto" by measurement: timed once per machine and model, cached, reused; the rule that picks the
winner; the fixed order when probing is off; damaged caches and runtimes that cannot take the model."""

import json

import numpy as np
import pytest

from resnetlab import Predictor, create_model
from resnetlab.deploy import probe
from resnetlab.deploy.predictor import auto_backend
from resnetlab.deploy.runtimes import available_backends
from deploy_helpers import train_tiny
from train_helpers import run_cli


@pytest.fixture
def probing(monkeypatch, tmp_path):
    monkeypatch.delenv(probe.NO_PROBE_ENV, raising=False)
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "backend_choice.json"


def _tiny_model(seed=0):
    import torch

    torch.manual_seed(seed)
    return create_model("resnet20", num_classes=3, layers=(1, 1, 1))


def test_auto_measures_once_then_reuses_the_cached_choice(probing, monkeypatch):
    p = Predictor(_tiny_model(), image_size=16)
    installed = [b for b, ok in available_backends().items() if ok]
    assert p.choice.how == "measured now" and set(p.choice.timings) == set(installed)
    best = max(p.choice.timings, key=lambda b: p.choice.timings[b]["score"])
    assert p.backend == best and p.choice.timings[best]["score"] == pytest.approx(1.0, abs=0.5)
    assert all(t["batch1_ms"] > 0 and t[f"batch{probe.PROBE_BATCH}_img_s"] > 0 for t in p.choice.timings.values())
    stored = json.loads(probing.read_text())
    assert [e["backend"] for e in stored.values()] == [best]

    def no_timing(*a, **k):
        raise AssertionError("measured again although the choice was cached")

    monkeypatch.setattr(probe, "_measure", no_timing)
    again = Predictor(_tiny_model(), image_size=16)
    assert again.backend == best and again.choice.how.startswith("measured earlier")
    assert "score" in again.explain_choice() and again.info["how"] == again.choice.how
    with pytest.raises(AssertionError, match="measured again"):  # another model: another key, measured anew
        Predictor(_tiny_model(seed=1), image_size=16)


class _Fake:
    def __init__(self, ms1, ms16):
        self.cost = {1: ms1 / 1e3, probe.PROBE_BATCH: ms16 / 1e3}


@pytest.mark.parametrize("costs, winner", [
    ({"a": (10, 100), "b": (20, 200)}, "a"),  # faster at both
    ({"a": (10, 400), "b": (11, 100)}, "b"),  # 10 % slower at batch 1, 4x the throughput: b
    ({"a": (10, 110), "b": (40, 100)}, "a"),  # 4x the latency for 10 % more throughput: a
])
def test_the_winner_balances_latency_and_throughput(probing, monkeypatch, costs, winner):
    monkeypatch.setattr(probe, "_time", lambda rt, x, seconds, at_least: rt.cost[len(x)])
    choice, runtime = probe.choose_backend(list(costs), lambda b: _Fake(*costs[b]), shape=(3, 8, 8), digest="d",
                                           precision="fp32", threads=2, fallback="a")
    assert choice.backend == winner and runtime.cost[1] == costs[winner][0] / 1e3


def test_no_probe_takes_the_fixed_order_and_writes_nothing(probing, monkeypatch):
    monkeypatch.setenv(probe.NO_PROBE_ENV, "1")
    p = Predictor(_tiny_model(), image_size=16)
    assert p.backend == auto_backend() and "RESNETLAB_NO_PROBE" in p.choice.how and not probing.exists()


def test_a_damaged_cache_is_measured_again_and_rewritten(probing, monkeypatch):
    probing.parent.mkdir(parents=True)
    probing.write_text("{not json")
    monkeypatch.setattr(probe, "_time", lambda rt, x, seconds, at_least: 0.01 * len(x))
    choice, _ = probe.choose_backend(["x", "y"], lambda b: object(), shape=(3, 8, 8), digest="d", precision="fp32",
                                     threads=2, fallback="x")
    assert choice.how == "measured now" and len(json.loads(probing.read_text())) == 1


def test_a_runtime_that_cannot_take_the_model_is_left_out(probing, monkeypatch, caplog):
    monkeypatch.setattr(probe, "_time", lambda rt, x, seconds, at_least: 0.01)

    def build(b):
        if b == "broken":
            raise RuntimeError("unsupported operator Foo")
        return object()

    choice, _ = probe.choose_backend(["broken", "fine"], build, shape=(3, 8, 8), digest="d", precision="fp32",
                                     threads=2, fallback="broken")
    assert choice.backend == "fine" and "broken" not in choice.timings
    assert "unsupported operator Foo" in caplog.text


def test_predict_explains_its_choice(tmp_path, monkeypatch):
    _, run = train_tiny(tmp_path)
    monkeypatch.delenv(probe.NO_PROBE_ENV, raising=False)
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "cache"))
    out = run_cli("predict", "--checkpoint", str(run), "--explain-choice")
    assert "measured now" in out.stdout and "score" in out.stdout and "threads" in out.stdout
    again = run_cli("predict", "--checkpoint", str(run), "--explain-choice")
    assert "measured earlier" in again.stdout
    assert np.isfinite(float(again.stdout.split("score")[1].split()[0]))
