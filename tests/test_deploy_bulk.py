"""`resnetlab predict --data FOLDER --out preds.csv`: streamed, resumable, sharded."""

import csv
import json

import pytest

import resnetlab
from deploy_helpers import train_tiny
from resnetlab.cli import main
from resnetlab.deploy import Predictor
from resnetlab.deploy.bulk import predict_folder, sidecar_path
from train_helpers import run_cli


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tree, run = train_tiny(tmp_path_factory.mktemp("bulk"))
    (tree / "test" / "broken.jpg").write_text("not an image")
    return tree, run, Predictor(run, backend="torch")


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_bulk_writes_every_file_once_and_reports_bad_ones(tiny, tmp_path):
    tree, _, p = tiny
    s = predict_folder(p, tree / "test", tmp_path / "preds.csv", batch_size=5, workers=0, progress=False)
    rows = _rows(tmp_path / "preds.csv")
    assert len(rows) == 13 and s["failed"] == 1 and s["predicted_now"] == 13
    broken = next(r for r in rows if r["path"] == "broken.jpg")
    assert broken["error"] and not broken["label"]
    good = [r for r in rows if not r["error"]]
    assert all(r["label"] in ("blue", "green", "red") and len(r["topk_labels"].split(";")) == 3 for r in good)
    assert sum(r["label"] == r["path"].split("/")[0] for r in good) >= 9  # the tiny net learned the colours


def test_bulk_resumes_after_a_kill(tiny, tmp_path):
    tree, _, p = tiny
    out = tmp_path / "preds.csv"
    predict_folder(p, tree / "test", out, batch_size=4, workers=0, progress=False)
    full = out.read_text()
    lines = full.splitlines(keepends=True)
    out.write_text("".join(lines[:6]) + lines[6][:10])  # killed mid-write: 5 rows and half a line
    s = predict_folder(p, tree / "test", out, batch_size=4, workers=0, progress=False)
    assert s["resumed_from"] == 5 and s["predicted_now"] == 8
    assert sorted(out.read_text().splitlines()) == sorted(full.splitlines())


def test_bulk_shards_like_torchrun(tiny, tmp_path, monkeypatch):
    tree, _, p = tiny
    predict_folder(p, tree / "test", tmp_path / "one.csv", batch_size=4, workers=0, progress=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (1, 0):  # rank 0 merges once both parts are done
        monkeypatch.setenv("RANK", str(rank))
        predict_folder(p, tree / "test", tmp_path / "two.csv", batch_size=4, workers=0, progress=False,
                       merge_timeout_s=5)
    assert _rows(tmp_path / "two.csv") == sorted(_rows(tmp_path / "one.csv"), key=lambda r: r["path"])
    assert sorted(f.name for f in tmp_path.iterdir()) == ["one.csv", "one.csv.meta.json", "two.csv",
                                                          "two.csv.meta.json"]


def test_bulk_cli_with_workers(tiny, tmp_path):
    tree, run, _ = tiny
    out = run_cli("predict", "--checkpoint", str(run), "--backend", "torch", "--data", str(tree / "train"),
                  "--out", str(tmp_path / "p.csv"), "--workers", "2", "--batch-size", "16")
    assert "48 images predicted" in out.stdout
    assert len(_rows(tmp_path / "p.csv")) == 48
    bad = run_cli("predict", "--checkpoint", str(run), "--data", str(tmp_path / "nothing"), check=False)
    assert bad.returncode != 0 and "must be a folder of images" in bad.stderr


def _other_model(p):
    """Another network for the same images and classes: what a second checkpoint would be."""
    net = resnetlab.create_model("resnet20", layers=(1, 1, 1), num_classes=3).eval()
    return Predictor(net, backend="torch", classes=p.classes, image_size=p.meta.image_size)


def _killed(out, rows):
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[: rows + 1]))


def test_bulk_resumes_only_the_same_model(tiny, tmp_path):
    tree, run, p = tiny
    out = tmp_path / "preds.csv"
    predict_folder(p, tree / "test", out, batch_size=4, workers=0, progress=False)
    record = json.loads(sidecar_path(out).read_text())
    assert record["model_digest"] == p.digest and record["topk"] == 5 and record["precision"] == "fp32"
    full = out.read_text()
    _killed(out, 5)
    other = _other_model(p)
    with pytest.raises(ValueError, match="written by another model.*model_digest.*--overwrite"):
        predict_folder(other, tree / "test", out, batch_size=4, workers=0, progress=False)
    with pytest.raises(ValueError, match="topk: 5 there, 3 now"):
        predict_folder(p, tree / "test", out, topk=3, batch_size=4, workers=0, progress=False)
    assert len(_rows(out)) == 5  # nothing was appended by the refused runs
    # the same checkpoint loaded again, on another runtime, is the same model: it resumes
    s = predict_folder(Predictor(run, backend="onnxruntime"), tree / "test", out, batch_size=4, workers=0,
                       progress=False)
    assert s["resumed_from"] == 5 and s["predicted_now"] == 8
    assert [r["label"] for r in sorted(_rows(out), key=lambda r: r["path"])] == \
        [r["label"] for r in sorted(csv.DictReader(full.splitlines()), key=lambda r: r["path"])]
    # overwrite: the other model's rows only, and its digest on record
    s = predict_folder(other, tree / "test", out, batch_size=4, workers=0, progress=False, overwrite=True)
    assert s["resumed_from"] == 0 and s["predicted_now"] == 13 and len(_rows(out)) == 13
    assert json.loads(sidecar_path(out).read_text())["model_digest"] == other.digest


def test_bulk_refuses_rows_of_unknown_origin(tiny, tmp_path):
    tree, _, p = tiny
    out = tmp_path / "preds.csv"
    predict_folder(p, tree / "test", out, batch_size=4, workers=0, progress=False)
    _killed(out, 5)
    sidecar_path(out).unlink()  # e.g. a CSV from an older resnetlab, or written by hand
    with pytest.raises(ValueError, match="no preds.csv.meta.json saying which model wrote them"):
        predict_folder(p, tree / "test", out, batch_size=4, workers=0, progress=False)
    out.write_text(",".join(["path", "label", "prob", "topk_labels", "topk_probs", "error"]) + "\n")
    s = predict_folder(p, tree / "test", out, batch_size=4, workers=0, progress=False)  # a header only: no rows
    assert s["predicted_now"] == 13 and len(_rows(out)) == 13


def test_bulk_cli_overwrite_and_its_deprecated_alias(tiny, tmp_path, capsys):
    tree, run, p = tiny
    out = tmp_path / "p.csv"
    predict_folder(_other_model(p), tree / "test", out, batch_size=4, workers=0, progress=False)
    args = ["predict", "--checkpoint", str(run), "--backend", "torch", "--data", str(tree / "test"),
            "--out", str(out), "--workers", "0", "--json"]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["predicted_now"] == 13
    assert json.loads(sidecar_path(out).read_text())["model_digest"] == p.digest
    assert main(args + ["--no-resume"]) == 0
    assert "--no-resume is deprecated; use --overwrite" in capsys.readouterr().err


def test_cli_predict_answers_every_readable_image(tiny, tmp_path, capsys):
    tree, run, p = tiny
    good = [str(sorted((tree / "test" / c).iterdir())[0]) for c in ("red", "blue")]
    missing = str(tmp_path / "missing.png")
    args = ["predict", "--checkpoint", str(run), "--backend", "torch", "--topk", "2"]
    assert main(args + [good[0], str(tree / "test" / "broken.jpg"), good[1], missing]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [ln.split(": ")[0] for ln in lines] == good  # every readable image answered, in order
    for line, top in zip(lines, p.predict(good, topk=2)):
        assert line.split(": ")[1].startswith(f"{top[0][0]} {100 * top[0][1]:.1f}%")
    bad = [ln for ln in captured.err.splitlines() if "cannot read image" in ln]
    assert len(bad) == 2 and "broken.jpg" in bad[0] and "missing.png" in bad[1]
    assert "2 of 4 images could not be read" in captured.err
    assert main(args + ["--json", good[0], missing]) == 1
    answer = json.loads(capsys.readouterr().out)
    assert answer[0]["top"][0]["class"] == p.predict([good[0]])[0][0][0] and "cannot read" in answer[1]["error"]
    assert main(args + good) == 0
