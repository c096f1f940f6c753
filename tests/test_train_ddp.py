"""DistributedDataParallel under torchrun: 2 gloo processes on this machine."""

import subprocess
import sys

import torch

from resnetlab import create_model
from resnetlab.train.checkpoint import load_checkpoint
from test_train_resume import _kill_after_checkpoint
from train_helpers import ROOT, cli_args, run_cli, tiny_config, write_tree

TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m")


def torchrun(cfg, *extra: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, *TORCHRUN, "resnetlab", "train", *cli_args(cfg), *extra], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _model(run_dir):
    return load_checkpoint(run_dir / "last.pt")["model"]


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    """GroupNorm makes a step independent of how the batch is split, so the runs must agree."""
    tree = write_tree(tmp_path / "colours", val=4)
    kw = dict(epochs=2, model_kwargs={"layers": (1, 1, 1), "norm_layer": "group"})
    one, two = tiny_config(tree, tmp_path / "one", **kw), tiny_config(tree, tmp_path / "two", **kw)
    run_cli("train", *cli_args(one))
    out = torchrun(two, "--download")  # rank 0 alone may download; the data is there, so nobody does
    assert out.stdout.count('"world_size": 2') == 1  # only rank 0 reports
    a, b = _model(tmp_path / "one"), _model(tmp_path / "two")
    torch.manual_seed(one.seed)  # the initial weights, to scale the tolerance by the distance travelled
    init = create_model("resnet20", num_classes=3, layers=(1, 1, 1), norm_layer="group").state_dict()
    moved = sum((a[k] - init[k]).pow(2).sum() for k in a if a[k].is_floating_point()).sqrt()
    diff = sum((a[k] - b[k]).pow(2).sum() for k in a if a[k].is_floating_point()).sqrt()
    assert moved > 0.1 and diff / moved < 1e-4, f"DDP drifted from 1 process: {diff:.3g} vs moved {moved:.3g}"
    assert load_checkpoint(tmp_path / "two" / "last.pt")["global_step"] == 8


def test_killed_ddp_run_resumes_exactly(tmp_path):
    tree = write_tree(tmp_path / "colours", train=32, val=4)
    kw = dict(epochs=2, ckpt_every_steps=1)
    ref = tiny_config(tree, tmp_path / "ref", **kw)
    torchrun(ref)
    killed = tiny_config(tree, tmp_path / "killed", **kw)
    step = _kill_after_checkpoint(killed, min_step=3, launcher=TORCHRUN)
    assert 3 <= step < 16, f"not killed part-way (last checkpoint at step {step})"
    subprocess.run([sys.executable, *TORCHRUN, "resnetlab", "train", "--resume", str(tmp_path / "killed")],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    a, b = _model(tmp_path / "ref"), _model(tmp_path / "killed")
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after the DDP resume"
