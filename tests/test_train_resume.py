"""Exact resume: a run killed with SIGKILL part-way and resumed ends bit-identical."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from resnetlab.cli import main
from resnetlab.train.checkpoint import load_checkpoint
from train_helpers import ROOT, cli_args, run_cli, tiny_config, write_tree


def _weights(run_dir):
    ck = load_checkpoint(run_dir / "last.pt")
    return ck, {k: v for k, v in ck["model"].items()}


def _kill_after_checkpoint(cfg, min_step: int, launcher: tuple = ()) -> int:
    """Start `resnetlab train`, SIGKILL it (and its process group) once last.pt holds step >= min_step."""
    out = os.path.join(cfg.out, "last.pt")
    proc = subprocess.Popen([sys.executable, *(launcher or ("-m",)), "resnetlab", "train", *cli_args(cfg)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, step = time.time() + 120, -1
    try:
        while time.time() < deadline and proc.poll() is None:
            if os.path.exists(out):
                try:
                    step = load_checkpoint(out)["global_step"]
                except (ValueError, FileNotFoundError):
                    step = -1
                if step >= min_step:
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return step


def _rows(run_dir) -> list[dict]:
    """metrics.jsonl rows without what depends on the clock (wall time, throughput)."""
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("wall_time_s", "img_per_s")} for r in rows]


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    tree = write_tree(tmp_path / "colours", train=32, val=4)
    # 8 batches per epoch x 3 epochs; a checkpoint after every step; dropout-free but with EMA and drop-path RNG
    common = dict(epochs=3, ckpt_every_steps=1, ema_decay=0.9, mixup=0.2,
                  model_kwargs={"layers": (1, 1, 1), "drop_path_rate": 0.2})
    ref = tiny_config(tree, tmp_path / "ref", **common)
    run_cli("train", *cli_args(ref))
    killed = tiny_config(tree, tmp_path / "killed", **common)
    step = _kill_after_checkpoint(killed, min_step=5)
    assert 5 <= step < 24, f"the run was not killed part-way (last checkpoint at step {step})"
    assert not (tmp_path / "killed" / "summary.json").exists()
    run_cli("train", "--resume", str(tmp_path / "killed"))
    ref_ck, ref_w = _weights(tmp_path / "ref")
    res_ck, res_w = _weights(tmp_path / "killed")
    assert res_ck["global_step"] == ref_ck["global_step"] == 24
    for key, value in ref_w.items():
        assert torch.equal(value, res_w[key]), f"{key} differs after resume"
    for key, value in ref_ck["ema"].items():
        assert torch.equal(value, res_ck["ema"][key]), f"EMA {key} differs after resume"
    # every row, the one of the epoch the kill interrupted included (its partial sums are in the checkpoint)
    ref_rows, res_rows = _rows(tmp_path / "ref"), _rows(tmp_path / "killed")
    assert len(ref_rows) == 3 and res_rows == ref_rows


def test_resume_of_a_finished_run_extends_it(tmp_path):
    tree = write_tree(tmp_path / "colours")
    assert main(["train", *cli_args(tiny_config(tree, tmp_path / "a", epochs=1))]) == 0
    assert main(["train", "--resume", str(tmp_path / "a"), "--epochs", "2"]) == 0
    assert load_checkpoint(tmp_path / "a" / "last.pt")["epoch"] == 2


def test_resume_needs_a_checkpoint(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_resume_drops_metric_rows_the_checkpoint_does_not_hold(tmp_path):
    """Killed after an epoch's row (and step-log lines) were written but before its checkpoint: each row and
    step line is written once."""
    from resnetlab.train.engine import fit

    tree = write_tree(tmp_path / "colours", val=4)
    out = tmp_path / "run"
    cfg = tiny_config(tree, out, epochs=2, ckpt_every_steps=1, log_loss_every=1)
    fit(cfg.replace(epochs=1))  # epoch 1 complete (steps 1-4), checkpoint at epoch 1
    rows = (out / "metrics.jsonl").read_text()
    (out / "metrics.jsonl").write_text(rows + rows.replace('"epoch": 1', '"epoch": 2'))  # a stray row
    with open(out / "steps.jsonl", "a") as f:
        f.write('{"step": 5, "epoch": 2, "loss": 9.0, "lr": 0.1}\n{"step": 6, "ep')  # and a torn line
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 0
    epochs = [json.loads(r)["epoch"] for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert [r.split(",")[0] for r in (out / "metrics.csv").read_text().splitlines()] == ["epoch", "1", "2"]
    steps = [json.loads(r) for r in (out / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps] == list(range(1, 9)) and all(r["loss"] != 9.0 for r in steps)


def test_an_epoch_resumed_part_way_gives_the_row_of_the_uninterrupted_run(tmp_path, monkeypatch):
    """Interrupted at step 7 (epoch 2, batch 3), resumed from the step-6 checkpoint: epoch 2's row (its loss
    and accuracy summed over batches run before and after the interruption) equals the uninterrupted one."""
    import torch.nn.functional as F

    from resnetlab.train.engine import TrainingDiverged, fit

    tree = write_tree(tmp_path / "colours", val=4)  # 4 batches per epoch
    common = dict(epochs=3, ckpt_every_steps=1, mixup=0.2)
    fit(tiny_config(tree, tmp_path / "ref", **common))
    real, calls = F.cross_entropy, []

    def interrupted(*args, **kwargs):
        calls.extend([1] if args[0].requires_grad else [])
        if len(calls) == 7:
            raise TrainingDiverged("interrupted")
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(F, "cross_entropy", interrupted)
        with pytest.raises(TrainingDiverged, match="interrupted"):
            fit(tiny_config(tree, tmp_path / "run", **common))
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (ck["epoch"], ck["batch"], ck["global_step"]) == (1, 2, 6) and ck["epoch_sums"][2] == 24
    fit(resume=tmp_path / "run")
    assert _rows(tmp_path / "run") == _rows(tmp_path / "ref")
