"""`resnetlab compress`: every step leaves its result, resumes, and the report's numbers are the models' own."""

import json

import pytest
import torch

from extras_helpers import need
from resnetlab.cli import main
from resnetlab.compress import CompressConfig, PruneConfig, compress_steps
from resnetlab.eval import eval_batches, load_trained, open_split
from resnetlab.train.checkpoint import load_checkpoint
from resnetlab.train.engine import fit
from train_helpers import interrupted_at, tiny_config, write_tree

need("torch_pruning", "compress")
need("openvino", "openvino")
need("nncf", "openvino")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("compress")
    tree = write_tree(root / "colours", train=24, test=8, val=4, size=16)
    fit(tiny_config(tree, root / "base", epochs=3, model_kwargs={"layers": (1, 1, 1), "widths": (16, 32, 64)}))
    return root / "base"


def _eager_top1(checkpoint) -> float:
    trained = load_trained(checkpoint)
    batches = eval_batches(open_split(trained, None, "test"), trained.preprocess, batch_size=64)
    hits = n = 0
    with torch.no_grad():
        for x, y, *_ in batches.epoch(0):
            hits += int((trained.model(x).argmax(1) == y).sum())
            n += len(y)
    return hits / n


def test_the_whole_pipeline_and_its_report(base, tmp_path, capsys):
    out = tmp_path / "c"
    args = ["compress", "--checkpoint", str(base), "--out", str(out), "--prune-ratio", "0.5", "--finetune-epochs",
            "2", "--distill", "--qat-epochs", "1", "--calib-images", "16", "--seconds", "0.05", "--repeats", "1"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    rows = report["rows"]
    assert [(r["step"], r["precision"]) for r in rows] == [
        ("original", "fp32"), ("original", "int8"), ("pruned", "fp32"), ("fine-tuned", "fp32"),
        ("fine-tuned", "int8"), ("fine-tuned + QAT", "int8")]
    prune = json.loads((out / "prune" / "prune.json").read_text())
    assert all(r["macs"] == prune["macs_after"] for r in rows[2:]) and rows[0]["macs"] == prune["macs_before"]
    assert rows[2]["params"] < 0.4 * rows[0]["params"] and rows[1]["mb"] < rows[0]["mb"]
    # the rows' top-1 are the models' own: the original and the fine-tuned checkpoint in eager PyTorch
    assert rows[0]["test_top1"] == pytest.approx(_eager_top1(base))
    assert rows[3]["test_top1"] == pytest.approx(_eager_top1(out / "finetune" / "best.pt"))
    assert abs(rows[5]["test_top1"] - _eager_top1(out / "qat" / "best.pt")) <= 1 / 24 + 1e-9
    assert all(r["b32_img_s"] > 0 and r["b1_ms_min"] <= r["b1_ms"] <= r["b1_ms_max"] for r in rows)
    assert load_checkpoint(out / "finetune" / "last.pt")["distill"]["file"].endswith("best.pt")
    assert load_checkpoint(out / "qat" / "last.pt")["qat"]["backend"] == "nncf"
    for name in ("report.md", "report.csv", "pareto.png"):
        assert (out / name).stat().st_size > 0
    assert "| fine-tuned + QAT | int8 |" in (out / "report.md").read_text()
    # a second run keeps every step's result (the steps without the timing here, to keep the test short)
    stamp = (out / "finetune" / "best.pt").stat().st_mtime_ns, (out / "qat" / "model.int8.xml").stat().st_mtime_ns
    plan = json.loads((out / "plan.json").read_text())
    again = compress_steps(CompressConfig(**{**plan, "prune": PruneConfig(**{**plan["prune"],
                                                                             "keep": tuple(plan["prune"]["keep"])})}))
    assert [r["test_top1"] for r in again] == [r["test_top1"] for r in rows]
    assert stamp == ((out / "finetune" / "best.pt").stat().st_mtime_ns,
                     (out / "qat" / "model.int8.xml").stat().st_mtime_ns)
    # the same folder with other settings is refused, naming them
    assert main([*args[:5], "--prune-ratio", "0.3", *args[7:]]) == 2
    assert "other settings (prune)" in capsys.readouterr().err


def test_a_run_stopped_mid_fine_tuning_finishes_as_if_never_stopped(base, tmp_path):
    def cfg(out):
        return CompressConfig(checkpoint=str(base), out=str(out), prune=PruneConfig(ratio=0.5), finetune_epochs=2,
                              int8=False, calib_images=8, train_overrides={"ckpt_every_steps": 1})

    compress_steps(cfg(tmp_path / "ref"))
    with interrupted_at(8, error=KeyboardInterrupt()), pytest.raises(KeyboardInterrupt):
        compress_steps(cfg(tmp_path / "run"))
    assert load_checkpoint(tmp_path / "run" / "finetune" / "last.pt")["global_step"] == 7
    rows = compress_steps(cfg(tmp_path / "run"))
    ref = load_checkpoint(tmp_path / "ref" / "finetune" / "last.pt")
    got = load_checkpoint(tmp_path / "run" / "finetune" / "last.pt")
    assert got["global_step"] == ref["global_step"] == 12
    assert all(torch.equal(v, got["model"][k]) for k, v in ref["model"].items())
    assert [r["step"] for r in rows] == ["original", "pruned", "fine-tuned"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(runtime="onnxruntime", qat_epochs=1), "exports through NNCF to OpenVINO"),
    (dict(distill=True), "distill teaches the fine-tuning or QAT steps"),
    (dict(calib_images=0), "calib_images and repeats must be >= 1"),
    (dict(runtime="tensorrt"), "runtime must be one of"),
])
def test_settings_that_cannot_work_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CompressConfig(checkpoint="x", out="y", **kwargs)


def test_the_cli_names_a_bad_ratio(base, tmp_path, capsys):
    assert main(["compress", "--checkpoint", str(base), "--out", str(tmp_path / "c"), "--prune-ratio", "1.5"]) == 2
    assert r"ratio must be in (0, 1), got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_a_pruned_model_runs_on_onnx_runtime_in_fp32_and_int8(base, tmp_path):
    """The ONNX Runtime path: the pruned, fine-tuned model exports and quantizes like any other, and the
    Predictor serves the int8 file alone."""
    need("onnxruntime", "onnx")
    from resnetlab import Predictor

    out = tmp_path / "ort"
    rows = compress_steps(CompressConfig(checkpoint=str(base), out=str(out), prune=PruneConfig(ratio=0.5),
                                         finetune_epochs=1, runtime="onnxruntime", calib_images=16))
    assert [(r["step"], r["precision"], r["path"][-5:]) for r in rows] == [
        ("original", "fp32", ".onnx"), ("original", "int8", ".onnx"), ("pruned", "fp32", ".onnx"),
        ("fine-tuned", "fp32", ".onnx"), ("fine-tuned", "int8", ".onnx")]
    assert rows[3]["test_top1"] == pytest.approx(_eager_top1(out / "finetune" / "best.pt"))
    assert rows[4]["mb"] < rows[3]["mb"] < rows[0]["mb"]
    trained = load_trained(out / "finetune" / "best.pt")
    x = next(iter(eval_batches(open_split(trained, None, "test"), trained.preprocess, batch_size=8).epoch(0)))[0]
    p = Predictor(out / "final" / "model.int8.onnx")
    with torch.no_grad():
        eager = trained.model.eval()(x).argmax(1)
    got = [trained.classes.index(top[0][0]) for top in p.predict(x, topk=1)]
    assert sum(int(g == e) for g, e in zip(got, eager.tolist())) >= 7  # int8 may flip a near-tie


def test_pareto_labels_of_close_points_do_not_overlap(tmp_path, monkeypatch):
    """FP32 and int8 of one ratio often land a few pixels apart: their labels must still be readable."""
    import matplotlib.pyplot as plt

    from resnetlab.compress import report

    boxes = {}

    def keep(fig, path):  # the label boxes as drawn, instead of the file
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        boxes["all"] = [t.get_window_extent(r) for t in fig.axes[0].texts]
        plt.close(fig)

    monkeypatch.setattr("resnetlab.utils.plot.save_figure", keep)
    rows = [dict(step=s, precision=p, group=g, b32_img_s=v, b32_img_s_min=v * 0.9, b32_img_s_max=v * 1.1,
                 test_top1=a) for s, p, g, v, a in [("original", "fp32", "o", 170, 0.877),
                                                     ("original", "int8", "o", 715, 0.877),
                                                     ("r=0.5 fine-tuned", "fp32", "a", 700, 0.875),
                                                     ("r=0.5 fine-tuned", "int8", "a", 1900, 0.854),
                                                     ("r=0.5 QAT", "int8", "a", 1860, 0.856),
                                                     ("r=0.7 fine-tuned", "int8", "b", 3700, 0.805)]]
    report.pareto_plot(rows, tmp_path / "p.png", "close points")
    b = boxes["all"]
    assert len(b) == len(rows)
    clashes = [(i, j) for i in range(len(b)) for j in range(i) if b[i].overlaps(b[j])]
    assert clashes == []
