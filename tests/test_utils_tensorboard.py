"""TensorBoard event files of a run (torch.utils.tensorboard.SummaryWriter), read back by TensorBoard itself."""

import json
import shutil
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from resnetlab.train.engine import fit
from train_helpers import tiny_config, write_tree


def _scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_events_match_rows(run_dir, steps_per_epoch: int) -> None:
    scalars, rows = _scalars(run_dir), _rows(run_dir)
    row_keys = {k for r in rows for k in r} - {"epoch"}
    assert row_keys <= set(scalars), f"not in TensorBoard: {row_keys - set(scalars)}"
    for key in row_keys:
        want = [(r["epoch"] * steps_per_epoch, r[key]) for r in rows if key in r]
        got = scalars[key]
        assert [s for s, _ in got] == [s for s, _ in want], key
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6, abs=1e-30), key  # float32


def test_event_files_hold_the_metrics_rows(tmp_path):
    tree = write_tree(tmp_path / "colours", val=4)  # 48 train images: 4 batches of 12 per epoch
    result = fit(tiny_config(tree, tmp_path / "run", epochs=3, ema_decay=0.9))
    run = result.run_dir
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    _assert_events_match_rows(run, steps_per_epoch=4)
    scalars = _scalars(run)
    assert {"train_loss", "train_acc", "val_top1", "val_top5", "ema_top1", "lr"} <= set(scalars)
    # best.pt's one test evaluation, at the last step
    assert scalars["test_top1"] == [(12, pytest.approx(result.summary["test_top1"], rel=1e-6))]


def _next_second() -> None:
    """TensorBoard reads event files in name order, which is creation second, host, pid, then a per-process
    counter (where "10" sorts before "9"): runs a second apart in one process keep their order."""
    time.sleep(1.0 - time.time() % 1.0 + 0.01)


def test_a_resumed_run_purges_the_steps_it_redoes(tmp_path):
    """Resumed from an epoch-1 checkpoint after epoch 2 was already logged: TensorBoard shows each epoch once,
    with the values of the run that finished."""
    tree = write_tree(tmp_path / "colours", val=4)
    run = tmp_path / "run"
    fit(tiny_config(tree, run, epochs=1))
    shutil.copy(run / "last.pt", tmp_path / "epoch1.pt")
    _next_second()
    fit(resume=run, epochs=2)
    shutil.copy(tmp_path / "epoch1.pt", run / "last.pt")  # as if killed after epoch 2's row, before its checkpoint
    _next_second()
    fit(resume=run, epochs=2)
    assert len(list(run.glob("events.out.tfevents.*"))) == 3
    assert [r["epoch"] for r in _rows(run)] == [1, 2]
    _assert_events_match_rows(run, steps_per_epoch=4)
