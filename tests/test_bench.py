"""`resnetlab bench` on a tiny model and one repeat writes every output, and says what is missing."""

import csv
import json

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
        assert r["bs1"]["p50_ms"] <= r["bs1"]["p99_ms"]
        assert 0 < r["bs1"]["rss_model_mib"] <= r["rss_model_mib"]
        assert r["params"] == 269722 and r["rss_peak_mib"] > r["rss_bare_mib"] > 50
        assert r["artefact_bytes"] > 100_000
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
    assert 0 <= rows["int8-onnxruntime"]["top1"] <= 1 and "real images" in rows["int8-onnxruntime"]["calibration"]
    assert "top-1 / top-5" in (tmp_path / "b" / "bench.md").read_text()
