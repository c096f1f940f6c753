"""`resnetlab train` / `eval` / `predict` from the command line, as a user runs them."""

import json

import pytest

from resnetlab.cli import main
from train_helpers import cli_args, run_cli, tiny_config, write_tree


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    tree = write_tree(tmp / "colours")
    cfg = tiny_config(tree, tmp / "run", epochs=4, lr=0.1)
    out = run_cli("train", *cli_args(cfg))
    return tree, tmp / "run", json.loads(out.stdout)


def test_train_prints_the_summary(trained):
    _, run, summary = trained
    assert summary["epochs"] == 4 and summary["run_dir"] == str(run)


def test_eval_json(trained):
    tree, run, _ = trained
    out = run_cli("eval", "--checkpoint", str(run), "--data", str(tree), "--split", "test", "--json")
    metrics = json.loads(out.stdout)
    for key in ("top1", "top5", "nll", "ece", "auc", "num_samples", "per_class_accuracy", "confusion_matrix"):
        assert key in metrics, key
    assert metrics["num_samples"] == 12 and 0 <= metrics["top1"] <= 1 and 0 <= metrics["ece"] <= 1
    assert set(metrics["per_class_accuracy"]) == {"blue", "green", "red"}
    assert sum(map(sum, metrics["confusion_matrix"])) == 12
    rows = (run / "eval-test" / "confusion_matrix.csv").read_text().splitlines()
    assert rows[0] == "true \\ predicted,blue,green,red"
    assert [r.split(",")[0] for r in rows[1:]] == ["blue", "green", "red"]
    assert (run / "eval-test" / "confusion_matrix.png").stat().st_size > 1000


def test_predict_names_classes(trained):
    tree, run, _ = trained
    image = sorted((tree / "test" / "green").iterdir())[0]
    out = run_cli("predict", "--checkpoint", str(run / "best.pt"), str(image), "--topk", "2", "--json")
    result = json.loads(out.stdout)[0]
    assert result["image"] == str(image) and len(result["top"]) == 2
    assert result["top"][0]["class"] in {"blue", "green", "red"} and 0 < result["top"][0]["prob"] <= 1
    text = run_cli("predict", "--checkpoint", str(run), str(image)).stdout
    assert str(image) in text and "%" in text


def test_predict_handles_any_size_and_mode(trained, tmp_path):
    from PIL import Image

    _, run, _ = trained
    paths = []
    for mode, size in (("L", (50, 20)), ("RGBA", (3, 3)), ("RGB", (300, 200))):
        p = tmp_path / f"{mode}.png"
        Image.new(mode, size).save(p)
        paths.append(str(p))
    assert run_cli("predict", "--checkpoint", str(run), *paths).stdout.count("%") >= 3
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    out = run_cli("predict", "--checkpoint", str(run), str(bad), check=False)
    assert out.returncode == 1 and "bad.jpg" in out.stderr  # an unreadable image: named, and exit status 1


def test_train_rejects_bad_arguments(tmp_path, capsys):
    assert main(["train", "--lr", "fast", "--data", str(tmp_path)]) == 2
    assert "lr must be float, got 'fast'" in capsys.readouterr().err
    assert main(["train", "--config", "cifar10-resnet19"]) == 2
    assert "cifar10-resnet18" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--dry-run", "--out", str(tmp_path / "r")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--overwrite"]) == 2
    assert "contradict" in capsys.readouterr().err


def test_dry_run(tmp_path, capsys, monkeypatch):
    tree = write_tree(tmp_path / "colours")
    cfg = tiny_config(tree, tmp_path / "dry", epochs=50)
    assert main(["train", *cli_args(cfg), "--dry-run"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 1 and summary["steps"] == 2
    # without --out, a dry run goes to runs/dry-run, its own scratch folder, replaced each time
    monkeypatch.chdir(tmp_path)
    args = [a for a in cli_args(cfg) if a != str(tmp_path / "dry")]
    args.remove("--out")
    for _ in range(2):
        assert main(["train", *args, "--dry-run"]) == 0
    rows = (tmp_path / "runs" / "dry-run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1
