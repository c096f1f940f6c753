"""The run folder: another run's files are never appended to, only resumed or (asked to) overwritten."""

import json

import pytest

from resnetlab.train.engine import Trainer, fit
from resnetlab.train.metrics_log import claim_run_dir
from train_helpers import cli_args, tiny_config, write_tree


@pytest.fixture
def tree(tmp_path):
    return write_tree(tmp_path / "colours", val=4)


def _epochs(run_dir) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_training_into_a_finished_run_is_refused(tree, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_config(tree, out, epochs=1)
    fit(cfg)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match=rf"the run folder {out} already holds a training run .*--resume.*--overwrite"):
        fit(cfg)
    with pytest.raises(ValueError, match="already holds a training run"):
        Trainer(cfg)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # untouched
    assert _epochs(out) == [1]


def test_overwrite_replaces_the_run_files_and_keeps_the_others(tree, tmp_path):
    out = tmp_path / "run"
    fit(tiny_config(tree, out, epochs=2, log_loss_every=1))
    (out / "notes.txt").write_text("mine")
    (out / "eval-test").mkdir()
    (out / "eval-test" / "metrics.json").write_text("{}")
    (out / ".last.pt.abc.tmp").write_bytes(b"a killed run's temp file")
    result = fit(tiny_config(tree, out, epochs=1), overwrite=True)
    assert _epochs(out) == [1] and result["epochs"] == 1  # not [1, 2, 1]
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    assert not (out / "steps.jsonl").exists() and not (out / ".last.pt.abc.tmp").exists()
    assert (out / "notes.txt").read_text() == "mine" and (out / "eval-test" / "metrics.json").is_file()
    assert (out / "train.log").read_text().count("done:") == 1


def test_an_empty_or_unrelated_folder_is_fine(tree, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert fit(tiny_config(tree, empty, epochs=1))["epochs"] == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "readme.txt").write_text("not a run")
    assert claim_run_dir(other) == [] and (other / "readme.txt").exists()
    failed = tmp_path / "failed"  # an attempt that stopped before its first epoch: train.log and config.yaml
    with pytest.raises(FileNotFoundError):
        fit(tiny_config(tmp_path / "no-such-data", failed, epochs=1))
    assert sorted(p.name for p in failed.iterdir()) == ["train.log"]
    assert fit(tiny_config(tree, failed, epochs=1))["epochs"] == 1
    with pytest.raises(ValueError, match="contradict"):
        claim_run_dir(other, resume=True, overwrite=True)


def test_cli_overwrite_flag(tree, tmp_path, capsys):
    from resnetlab.cli import main

    cfg = tiny_config(tree, tmp_path / "run", epochs=1)
    fit(cfg)
    capsys.readouterr()
    assert main(["train", *cli_args(cfg)]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "--resume" in err and str(tmp_path / "run") in err
    assert main(["train", *cli_args(cfg), "--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 1 and _epochs(tmp_path / "run") == [1]
