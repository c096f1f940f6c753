"""Exact resume: a run killed with SIGKILL part-way and resumed ends bit-identical."""

import os
import signal
import subprocess
import sys
import time

import torch

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


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    tree = write_tree(tmp_path / "colours", train=32)
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
    ref_rows = (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
    res_rows = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert len(res_rows) == len(ref_rows) == 3


def test_resume_of_a_finished_run_extends_it(tmp_path):
    tree = write_tree(tmp_path / "colours")
    run_cli("train", *cli_args(tiny_config(tree, tmp_path / "a", epochs=1)))
    run_cli("train", "--resume", str(tmp_path / "a"), "--epochs", "2")
    assert load_checkpoint(tmp_path / "a" / "last.pt")["epoch"] == 2


def test_resume_needs_a_checkpoint(tmp_path):
    out = run_cli("train", "--resume", str(tmp_path), check=False)
    assert out.returncode == 2 and "checkpoint not found" in out.stderr


def test_resume_drops_metric_rows_the_checkpoint_does_not_hold(tmp_path):
    """Killed after an epoch's row was written but before its checkpoint: the row is written once."""
    import json

    from resnetlab.train.engine import train

    tree = write_tree(tmp_path / "colours")
    out = tmp_path / "run"
    cfg = tiny_config(tree, out, epochs=2, ckpt_every_steps=1)
    train(cfg.replace(epochs=1))  # epoch 1 complete, checkpoint at epoch 1
    rows = (out / "metrics.jsonl").read_text()
    (out / "metrics.jsonl").write_text(rows + rows.replace('"epoch": 1', '"epoch": 2'))  # a stray row
    run_cli("train", "--resume", str(out), "--epochs", "2")
    epochs = [json.loads(r)["epoch"] for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert [r.split(",")[0] for r in (out / "metrics.csv").read_text().splitlines()] == ["epoch", "1", "2"]
