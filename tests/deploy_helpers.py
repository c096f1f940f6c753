"""A tiny trained checkpoint and image folder shared by the deployment tests."""

import json
from pathlib import Path

from train_helpers import cli_args, run_cli, tiny_config, write_tree


def train_tiny(tmp: Path) -> tuple[Path, Path]:
    """(image tree, run dir): ResNet-8 trained 3 epochs on 8x8 coloured noise (3 classes)."""
    tree = write_tree(tmp / "colours")
    cfg = tiny_config(tree, tmp / "run", epochs=3, lr=0.1)
    out = run_cli("train", *cli_args(cfg))
    assert json.loads(out.stdout)["epochs"] == 3
    return tree, tmp / "run"
