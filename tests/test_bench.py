"""`resnetlab bench` on a tiny model and one repeat writes every output, and says what is missing."""

import csv
import gc
import json
import weakref

import pytest

import resnetlab.deploy.bench as bench
from train_helpers import run_cli


def test_bench_writes_every_output(tmp_path, monkeypatch):
    real = bench.missing_packages
    monkeypatch.setattr(bench, "missing_packages", lambda b: ["fakepkg"] if b == "openvino-bf16" else real(b))
    result = bench.run_bench(["resnet20"], ["eager", "bf16", "onnxruntime", "int8", "openvino-bf16"],
                             batch_sizes=(1, 2), repeats=1, seconds=0.05, out=tmp_path, log=lambda s: None)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["bench.csv", "bench.json", "bench.md", "bench.png"]
    rows = {r["backend"]: r for r in result["rows"]}
    assert rows["openvino-bf16"]["status"] == "not installed (fakepkg)"
    for b in ("eager", "bf16", "onnxruntime", "int8"):
        r = rows[b]
        assert r["status"] == "ok", r
        assert r["bs1"]["img_per_s"] > 0 and r["bs2"]["img_per_s"] > 0
        # throughput is batch / median call time: at batch 1, 1000 / p50 (one of the middle calls)
        assert r["bs1"]["img_per_s"] * r["bs1"]["p50_ms"] / 1000 == pytest.approx(1, rel=0.25)
        assert 0 < r["bs1"]["rss_model_mib"] <= r["rss_model_mib"]
        assert r["params"] == 269722 and r["rss_peak_mib"] > r["rss_bare_mib"] > 50
        assert r["artefact_bytes"] > 100_000
        assert r["peak_reset"] is True  # the peak RSS counts running the runtime, not building it
    assert rows["int8"]["artefact_bytes"] < rows["eager"]["artefact_bytes"]
    md = (tmp_path / "bench.md").read_text()
    assert "not installed (fakepkg)" in md and "machine:" in md and "| resnet20 | eager |" in md
    assert len(list(csv.DictReader((tmp_path / "bench.csv").open()))) == 5
    assert json.loads((tmp_path / "bench.json").read_text())["env"]["cores"] >= 1


def test_article_check_states_its_own_verdict():
    rows = [{"model": m, "backend": "eager", "status": "ok", "bs1": {"img_per_s": fps}, "rss_model_mib": mem}
            for m, fps, mem in (("resnet18", 60, 73), ("vgg16", 9.6, 575), ("inception_v3", 14.9, 123),
                                ("xception", 12.3, 156))]
    text = "\n".join(bench.article_check({"rows": rows, "batch_sizes": [1, 32]}))
    assert "resnet18 > inception_v3 > xception > vgg16" in text and "does not hold" in text
    assert "vgg16 6.2x (article 1.64x)" in text
    assert "resnet18 is the fastest, resnet18 uses the least memory" in text


def test_bench_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown backend"):
        bench.run_bench(["resnet20"], ["tensorrt"], out=tmp_path)
    with pytest.raises(ValueError, match="unknown model"):
        bench.run_bench(["resnet19"], ["eager"], out=tmp_path)


def test_bench_cli_dry_run(tmp_path):
    out = run_cli("bench", "--dry-run", "--out", str(tmp_path))
    assert "bench.md" in out.stdout and (tmp_path / "bench.png").stat().st_size > 1000


def test_bench_with_a_checkpoint_reports_accuracy(tmp_path):
    from deploy_helpers import train_tiny

    tree, run = train_tiny(tmp_path)
    result = bench.run_bench(["resnet20"], ["eager", "onnxruntime", "int8-onnxruntime"], batch_sizes=(1,),
                             repeats=1, seconds=0.05, checkpoint=str(run), data=str(tree), out=tmp_path / "b",
                             log=lambda s: None)
    rows = {r["backend"]: r for r in result["rows"]}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["eager"]["acc_images"] == 12 and rows["onnxruntime"]["top1"] == rows["eager"]["top1"]
    int8 = rows["int8-onnxruntime"]
    assert abs(int8["top1"] - rows["eager"]["top1"]) <= 1 / 12 + 1e-9  # at most one of the 12 test images
    assert int8["acc_images"] == 12 and "real images" in int8["calibration"]
    assert "top-1 / top-5" in (tmp_path / "b" / "bench.md").read_text()


def test_bench_runs_the_predictor_and_hand_built_baselines(tmp_path):
    """The auto rows time the whole Predictor and say what it chose; the bare rows are the runtimes as a user
    writes them, on the same artefacts (so the same answers), and NNCF's default int8 on the same images."""
    from deploy_helpers import train_tiny
    from resnetlab.utils.hardware import cpu_has_bf16

    tree, run = train_tiny(tmp_path)
    backends = ["eager", "onnxruntime", "auto", "auto-precision", "bare-onnxruntime", "bare-openvino",
                "bare-int8-openvino"]
    result = bench.run_bench(["resnet20"], backends, batch_sizes=(1, 3), repeats=1, seconds=0.05,
                             checkpoint=str(run), data=str(tree), out=tmp_path / "b", log=lambda s: None)
    rows = {r["backend"]: r for r in result["rows"]}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    eager = rows["eager"]["top1"]
    assert rows["bare-onnxruntime"]["top1"] == rows["onnxruntime"]["top1"] == rows["bare-openvino"]["top1"] == eager
    assert abs(rows["bare-int8-openvino"]["top1"] - eager) <= 1 / 12 + 1e-9
    assert rows["bare-int8-openvino"]["artefact_bytes"] < rows["bare-openvino"]["artefact_bytes"] / 2
    # the suite runs without the probe (conftest), so auto takes the fixed order: OpenVINO is installed here
    assert rows["auto"]["chosen"]["backend"] == "openvino" and rows["auto"]["chosen"]["precision"] == "fp32"
    assert rows["auto"]["top1"] == eager
    if not cpu_has_bf16():
        assert rows["auto-precision"]["chosen"]["precision"] == "fp32"
    md = (tmp_path / "b" / "bench.md").read_text()
    assert "- auto chose **openvino fp32**" in md and "| resnet20 | bare-int8-openvino |" in md


@pytest.mark.parametrize("backend, keeps_original", [("channels_last", False), ("bf16", False), ("eager", True)])
def test_worker_measures_a_folded_backend_without_the_original(monkeypatch, backend, keeps_original):
    """While timing (and so while the peak RSS is taken), a folded backend's process holds its folded copy
    only: the original model's BatchNorm, folded away, is no longer alive. Eager runs the original itself."""
    real_load, originals, alive = bench._load_model, [], []

    def load(spec):
        model, meta, trained = real_load(spec)
        originals.append(weakref.ref(model.bn1))
        return model, meta, trained

    def timed(run, x, seconds, min_calls=3):
        gc.collect()
        alive.append(originals[0]() is not None)
        run(x)
        return [0.01] * min_calls

    monkeypatch.setattr(bench, "_load_model", load)
    monkeypatch.setattr(bench, "_time_calls", timed)
    spec = bench.BenchSpec("resnet20", backend, (1, 2), model_kwargs={"layers": (1, 1, 1)})
    out = bench.worker(spec)
    assert alive == [keeps_original] * 2
    assert out["params"] == 75290 and out["bs2"]["img_per_s"] == pytest.approx(200)
    assert out["peak_reset"] is True  # Linux: the peak is counted from the built runtime on


def test_chart_is_bars_per_model_and_backend(tmp_path, monkeypatch):
    import resnetlab.utils.plot as plot

    figures = []
    monkeypatch.setattr(plot, "save_figure", lambda fig, path: figures.append(fig))
    rows = [{"model": m, "backend": b, "status": "ok", "macs": macs, "bs1": {"img_per_s": v1},
             "bs32": {"img_per_s": v32}}
            for m, macs, b, v1, v32 in (("vgg16", 15.47e9, "eager", 7.9, 8.1), ("vgg16", 15.47e9, "int8", 52.2, 60.8),
                                        ("resnet18", 1.81e9, "eager", 62.6, 55.9),
                                        ("resnet18", 1.81e9, "int8", 451.9, 492.6))]
    rows.append({"model": "resnet18", "backend": "openvino", "status": "not installed (openvino)"})
    bench._plot({"rows": rows, "batch_sizes": [1, 32], "env": {"cpu": "test CPU", "torch_threads": 2},
                 "repeats": 2}, tmp_path / "bench.png")
    (fig,) = figures
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["batch 1", "batch 32"]  # a panel per batch size
    for ax, bs in zip(axes, ("bs1", "bs32")):
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert ticks == ["resnet18\n1.81 GMACs", "vgg16\n15.47 GMACs"]  # groups are models, by GMACs
        heights = sorted(round(p.get_height(), 1) for p in ax.patches)
        assert heights == sorted(r[bs]["img_per_s"] for r in rows if r["status"] == "ok")  # one bar each
        assert ax.get_yscale() == "log" and not ax.get_lines()  # no line joins different models
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["eager", "int8"]
