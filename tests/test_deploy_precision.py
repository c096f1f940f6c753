"""precision="auto": fp32 where the CPU has no native bf16, bf16 where it has and bf16 agrees with fp32 on the
check images, fp32 again when it does not; the measured agreement is reported."""

import numpy as np
import pytest

from resnetlab import Predictor
from resnetlab.deploy import precision as precision_module
from resnetlab.deploy.precision import MIN_AGREEMENT, choose_precision
from deploy_helpers import train_tiny
from train_helpers import run_cli


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("precision"))


def _runtimes(flip_share: float):
    """fp32 logits, and 'bf16' logits whose argmax differs on the first flip_share of the images."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((200, 5)).astype(np.float32)

    def make(p):
        def run(x):
            if p == "fp32":
                return z[: len(x)]
            out = z[: len(x)].copy()
            k = int(flip_share * len(x))
            out[:k] = -out[:k]  # the argmax of a negated row is its argmin: a different class
            return out
        return run
    return make


def test_no_native_bf16_means_fp32():
    choice = choose_precision(_runtimes(0.0), np.zeros((200, 3, 8, 8)), native_bf16=False)
    assert choice.precision == "fp32" and "no native bf16" in choice.how and choice.agreement is None


@pytest.mark.parametrize("flip, expected", [(0.0, "bf16"), (0.004, "bf16"), (0.01, "fp32"), (0.2, "fp32")])
def test_bf16_only_when_it_agrees_with_fp32(flip, expected):
    choice = choose_precision(_runtimes(flip), np.zeros((200, 3, 8, 8)), native_bf16=True, where="200 images")
    assert choice.precision == expected and choice.images == 200
    assert choice.agreement == pytest.approx(1 - int(flip * 200) / 200)
    assert (choice.agreement >= MIN_AGREEMENT) == (expected == "bf16")
    assert "agreement" in choice.describe()


def test_unchecked_bf16_says_so():
    choice = choose_precision(_runtimes(0.0), None, native_bf16=True)
    assert choice.precision == "bf16" and "NOT checked" in choice.how


def test_a_checkpoint_is_checked_on_its_own_validation_split(tiny, monkeypatch):
    tree, run = tiny
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: True)
    p = Predictor(run, backend="torch", precision="auto")
    c = p.precision_choice
    assert c.images > 0 and c.agreement is not None and p.precision == c.precision
    assert p.info["precision_choice"]["agreement"] == c.agreement
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: False)
    assert Predictor(run, backend="torch", precision="auto").precision == "fp32"


def test_predict_cli_takes_precision_auto(tiny):
    tree, run = tiny
    image = sorted((tree / "test").rglob("*.png"))[0]
    out = run_cli("predict", "--checkpoint", str(run), str(image), "--precision", "auto", "--backend", "torch")
    assert "precision " in out.stderr and ("no native bf16" in out.stderr or "agreement" in out.stderr)


def test_artefacts_are_decided_on_the_runtime_already_loaded(tiny, tmp_path, monkeypatch):
    from resnetlab.deploy import export as export_module
    from resnetlab.deploy.api import export_checkpoint

    tree, run = tiny
    onnx = export_checkpoint(run, "onnx", tmp_path / "m.onnx").path
    xml = export_checkpoint(run, "openvino", tmp_path / "m.xml").path
    assert Predictor(onnx, precision="auto").precision_choice.precision == "fp32"
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: True)
    loads = []
    real = export_module.load_artefact
    monkeypatch.setattr(export_module, "load_artefact",
                        lambda *a, **k: loads.append(k.get("precision")) or real(*a, **k))
    p = Predictor(xml, precision="auto", check_data=str(tree))
    c = p.precision_choice
    assert c.images > 0 and c.agreement is not None and p.precision == c.precision
    assert loads == ["fp32", "bf16"]  # loaded once per precision, the chosen one kept
