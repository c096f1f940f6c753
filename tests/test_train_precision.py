"""amp="auto": the precision follows the hardware; channels_last follows the precision; both are recorded."""

import json

import pytest
import torch

from resnetlab.eval import load_trained
from resnetlab.train.config import TrainConfig, load_config
from resnetlab.train.engine import fit, resolve_precision
from resnetlab.utils import hardware
from train_helpers import tiny_config, write_tree

CPU = torch.device("cpu")


@pytest.fixture
def tree(tmp_path):
    return write_tree(tmp_path / "colours", val=4)


def test_amp_choices_and_the_old_name_of_off():
    assert (TrainConfig().amp, TrainConfig().channels_last) == ("auto", None)
    assert load_config(None, {"amp": "none"}).amp == "off" and TrainConfig(amp="none").amp == "off"
    assert load_config(None, {"channels_last": "auto"}).channels_last is None
    assert load_config(None, {"channels_last": "false"}).channels_last is False
    with pytest.raises(ValueError, match=r"amp must be one of \('auto', 'off', 'bf16', 'fp16'\)"):
        load_config(None, {"amp": "fp8"})


@pytest.mark.parametrize("native_bf16, expected", [(True, ("bf16", True)), (False, ("off", False))])
def test_auto_resolves_per_cpu(monkeypatch, native_bf16, expected):
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: native_bf16)
    assert resolve_precision(TrainConfig(), CPU) == expected
    assert resolve_precision(TrainConfig(channels_last=False), CPU) == (expected[0], False)  # explicit wins
    assert resolve_precision(TrainConfig(amp="off", channels_last=True), CPU) == ("off", True)
    # a resumed run keeps the precision its checkpoint recorded
    assert resolve_precision(TrainConfig(), CPU, {"amp": "bf16", "channels_last": False}) == ("bf16", False)


def test_auto_on_a_cpu_with_native_bf16_trains_in_bf16_channels_last(tree, tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    result = fit(tiny_config(tree, tmp_path / "run", epochs=1, amp="auto", device="cpu"))
    assert (result["amp"], result["channels_last"]) == ("bf16", True)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["amp"] == "bf16"
    assert result.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert load_trained(tmp_path / "run").precision == {"amp": "bf16", "channels_last": True}
    assert "amp bf16, channels_last True" in (tmp_path / "run" / "train.log").read_text()


def test_auto_without_native_bf16_is_plain_fp32_nchw(tree, tmp_path, monkeypatch):
    """amp=auto on a CPU without bf16, and amp=off, are the FP32 NCHW run, bit for bit."""
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    auto = fit(tiny_config(tree, tmp_path / "auto", epochs=1, amp="auto", device="cpu"))
    off = fit(tiny_config(tree, tmp_path / "off", epochs=1, amp="off", channels_last=False, device="cpu"))
    assert (auto["amp"], auto["channels_last"]) == ("off", False)
    assert load_trained(tmp_path / "auto").precision == {"amp": "off", "channels_last": False}
    assert auto.model.conv1.weight.is_contiguous()  # NCHW
    a, b = auto.model.state_dict(), off.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
