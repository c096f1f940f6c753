"""`resnetlab predict --data FOLDER --out preds.csv`: streamed, resumable, sharded."""

import csv

import pytest

from deploy_helpers import train_tiny
from resnetlab.deploy import Predictor
from resnetlab.deploy.bulk import predict_folder
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
    assert sorted(f.name for f in tmp_path.iterdir()) == ["one.csv", "two.csv"]


def test_bulk_cli_with_workers(tiny, tmp_path):
    tree, run, _ = tiny
    out = run_cli("predict", "--checkpoint", str(run), "--backend", "torch", "--data", str(tree / "train"),
                  "--out", str(tmp_path / "p.csv"), "--workers", "2", "--batch-size", "16")
    assert "48 images predicted" in out.stdout
    assert len(_rows(tmp_path / "p.csv")) == 48
    bad = run_cli("predict", "--checkpoint", str(run), "--data", str(tmp_path / "nothing"), check=False)
    assert bad.returncode != 0 and "must be a folder of images" in bad.stderr
