"""`resnetlab models` and `resnetlab summary`: the tables people read."""

import json
import subprocess
import sys

import resnetlab
from resnetlab.cli import main, parse_kwargs


def test_summary_shows_residual_adds_and_projections():
    rows = resnetlab.model_summary("resnet18", max_depth=10)
    adds = [r for r in rows if r.kind == "residual add"]
    assert len(adds) == 8
    assert sum("projection" in r.note for r in adds) == 3
    assert [r.name for r in rows if r.note.startswith("projection shortcut")] == [
        "layer2.0.downsample", "layer3.0.downsample", "layer4.0.downsample"]
    conv1 = next(r for r in rows if r.name == "conv1")
    assert conv1.out_shape == (1, 64, 112, 112) and conv1.params == 9408 and conv1.macs == 118_013_952
    assert not [r for r in resnetlab.model_summary("plain18", max_depth=10) if r.kind == "residual add"]
    option_a = [r for r in resnetlab.model_summary("resnet20", max_depth=10) if "option A" in r.note]
    assert len(option_a) == 4  # two ShortcutA modules, two additions through them


def test_cli_models(capsys):
    assert main(["models", "--filter", "resnet1*"]) == 0
    out = capsys.readouterr().out
    assert "11,689,512" in out and "1.814" in out and "resnet110" in out and "vgg16" not in out
    assert main(["models", "--filter", "plain2*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "plain20" and rows[0]["params"] == 269_722 and rows[0]["shortcuts"] == "no"


def test_cli_summary(capsys):
    assert main(["summary", "resnet18", "--input-size", "3", "64", "64", "--model-kwargs", "stem=cifar",
                 "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "(+)" in out and "projection shortcut" in out and "11,173,962 parameters" in out
    assert "8 residual additions" in out


def test_cli_errors_are_clear(capsys):
    assert main(["summary", "resnet1800"]) == 2
    assert "unknown model 'resnet1800'" in capsys.readouterr().err
    assert main(["summary", "resnet18", "--model-kwargs", "shortcuts=A"]) == 2
    assert "close matches: shortcut" in capsys.readouterr().err


def test_parse_kwargs():
    assert parse_kwargs(["stem=cifar", "drop_path_rate=0.1", "shortcut=None", "layers=(1,1)"]) == {
        "stem": "cifar", "drop_path_rate": 0.1, "shortcut": None, "layers": (1, 1)}


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "resnetlab", "models", "--filter", "resnet20"],
                         capture_output=True, text=True, check=True).stdout
    assert "269,722" in out
