"""Quantization-aware training in the one engine: its quantizer ranges train, it resumes exactly, and it
reloads and exports as the int8 model that was trained."""

import numpy as np
import pytest
import torch

from extras_helpers import need
from resnetlab.deploy.meta import ModelMeta
from resnetlab.deploy.quantize import qat_to_openvino
from resnetlab.eval import eval_batches, load_trained, open_split
from resnetlab.models.qat import is_qat
from resnetlab.train.checkpoint import load_checkpoint
from resnetlab.train.engine import TrainingDiverged, fit
from train_helpers import interrupted_at, tiny_config, write_tree

need("nncf", "openvino")
need("openvino", "openvino")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("qat")
    tree = write_tree(root / "colours", train=24, test=8, val=4)
    fit(tiny_config(tree, root / "base", epochs=3))
    return tree, root / "base" / "best.pt"


def _qat(tree, out, base, **kw):
    return tiny_config(tree, out, pretrained=str(base), qat=True, qat_calib_images=8, lr=0.01, **kw)


def _quantizer_keys(state) -> list[str]:
    """The trainable scales of NNCF's quantizers (``__nncf_hooks.pre_hooks.<op>.scale``)."""
    return sorted(k for k in state if k.startswith("__nncf_hooks.") and k.endswith(".scale"))


def test_a_qat_run_trains_its_ranges_and_resumes_exactly(base, tmp_path):
    tree, ck = base
    common = dict(epochs=2, ckpt_every_steps=1)
    fit(_qat(tree, tmp_path / "ref", ck, **common))
    ref = load_checkpoint(tmp_path / "ref" / "last.pt")
    keys = _quantizer_keys(ref["model"])
    assert len(keys) >= 10, sorted(ref["model"])[:20]  # weights and activations of every conv are quantized
    assert ref["qat"] == {**ref["qat"], "backend": "nncf", "calib_images": 8}
    # the ranges are trained, not frozen at their calibrated start: a one-step run's differ from the ref's
    fit(_qat(tree, tmp_path / "short", ck, epochs=1, max_steps=1))
    short = load_checkpoint(tmp_path / "short" / "last.pt")
    assert any(not torch.equal(short["model"][k], ref["model"][k]) for k in keys)

    with interrupted_at(3), pytest.raises(TrainingDiverged, match="interrupted"):
        fit(_qat(tree, tmp_path / "run", ck, **common))
    assert load_checkpoint(tmp_path / "run" / "last.pt")["global_step"] == 2
    fit(resume=tmp_path / "run")
    got = load_checkpoint(tmp_path / "run" / "last.pt")
    assert got["global_step"] == ref["global_step"] == 12
    for key, value in ref["model"].items():
        assert torch.equal(value, got["model"][key]), key


def test_a_qat_checkpoint_reloads_quantized_and_exports_to_an_int8_ir(base, tmp_path):
    tree, ck = base
    fit(_qat(tree, tmp_path / "q", ck, epochs=1))
    trained = load_trained(tmp_path / "q" / "best.pt")
    assert is_qat(trained.model)
    plain = load_trained(ck)
    x = next(iter(eval_batches(open_split(trained, None, "test"), trained.preprocess, batch_size=8).epoch(0)))[0]
    with torch.no_grad():
        q_out, p_out = trained.model.eval()(x), plain.model.eval()(x)
    # fake-quantization is in the forward pass: the reloaded model is not its float twin
    assert not torch.allclose(q_out, p_out, atol=1e-4)
    meta = ModelMeta.from_trained(trained)
    report = qat_to_openvino(trained.model, meta, tmp_path / "m.int8.xml", check=[x.numpy()])
    assert report["decisive_agreement"] == 1.0 and report["max_abs_logit_diff"] < 0.5
    xml = (tmp_path / "m.int8.xml").read_text()
    # BN folded into the convolutions
    assert xml.count('type="FakeQuantize"') >= 10 and 'type="BatchNormInference"' not in xml
    # what the CPU plugin compiles: every convolution (the residual adds fused into them) runs in int8
    import openvino as ov

    compiled = ov.Core().compile_model(str(tmp_path / "m.int8.xml"), "CPU").get_runtime_model()
    convs = [op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled.get_ordered_ops()
             if op.get_rt_info()["layerType"].astype(str) == "Convolution"]
    assert len(convs) >= 7 and set(convs) <= {"u8", "i8"}, convs
    with pytest.raises(ValueError, match="takes a quantization-aware model"):
        qat_to_openvino(plain.model, meta, tmp_path / "p.xml")
    assert not (tmp_path / "p.xml").exists() and np.isfinite(report["max_abs_logit_diff"])
