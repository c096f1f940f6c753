"""``explain`` on checkpoints: image files read with the run's preprocessing (grayscale too), panels and
JSON written per image, a gallery of a split with a corrupt file skipped, the CLI, and refused inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab.explain import (METRICS, SplitInputs, evaluate_explanations, explain, explain_files, explain_split,
                               load_explainable)
from resnetlab.train.engine import fit
from train_helpers import run_cli, tiny_config, write_tree


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    data = write_tree(root / "data", train=16, test=6, size=16)
    return data, fit(tiny_config(data, root / "run", epochs=2)).run_dir


def test_files_are_read_with_the_runs_preprocessing_and_written(run, tmp_path):
    data, run_dir = run
    images = sorted((data / "test" / "red").glob("*.png"))[:2]
    ex = explain(run_dir, images, method="gradcam++", target="red")
    assert ex.maps.shape == (2, 16, 16) and ex.layer == "layer3" and ex.classes == ["blue", "green", "red"]
    assert ex.maps.min() >= 0 and ex.maps.max() <= 1 and torch.equal(ex.targets, torch.tensor([2, 2]))
    bigger = Image.open(images[0]).resize((40, 40))  # any input size: resized as the run's preprocessing says
    assert explain(run_dir, [bigger]).maps.shape == (1, 16, 16)
    r = explain_files(run_dir, [*images, data / "nope.png", images[0]], tmp_path / "out", top_k=2)
    assert len(r["explained"]) == 3 and "cannot read image" in r["errors"][str(data / "nope.png")]
    assert r["explained"][2]["png"] == f"{images[0].stem}-2.png"  # the same name twice: nothing overwritten
    stem = images[0].stem
    record = json.loads((tmp_path / "out" / f"{stem}.json").read_text())
    assert record["target"]["class"] == record["top"][0]["class"] and len(record["top"]) == 2
    assert np.array(record["map"]).shape == tuple(record["map_shape"])
    assert np.load(tmp_path / "out" / f"{stem}.npy").shape == tuple(record["map_shape"])
    assert (tmp_path / "out" / f"{stem}.png").stat().st_size > 2000


def test_grayscale_models_are_explained(tmp_path):
    data = write_tree(tmp_path / "data", train=8, test=2, size=12)
    for png in data.rglob("*.png"):  # grayscale files: the run trains a 1-channel net
        Image.open(png).convert("L").save(png)
    run_dir = fit(tiny_config(data, tmp_path / "run", epochs=1)).run_dir
    ex = explain(run_dir, sorted((data / "test" / "blue").glob("*.png")))
    assert ex.inputs.shape[1] == 1 and ex.maps.shape == (2, 12, 12)


def test_a_split_gallery_lists_wrong_predictions_first_and_skips_a_corrupt_file(run, tmp_path):
    data, run_dir = run
    copy_root = tmp_path / "data"
    import shutil

    shutil.copytree(data, copy_root)
    (copy_root / "test" / "red" / "broken.png").write_bytes(b"not a png")
    s = explain_split(run_dir, tmp_path / "gallery", data=copy_root, limit=None, progress=False)
    assert s["images"] == 18 and s["skipped"] == 1
    page = (tmp_path / "gallery" / "index.html").read_text()
    assert page.count("<h2") == 3 and "1 unreadable file(s) skipped" in page
    assert page.index("wrong (") < page.index("correct (")


def test_faithfulness_evaluation_writes_its_table(run, tmp_path):
    _, run_dir = run
    r = evaluate_explanations(run_dir, limit=8, methods=["gradcam", "layercam"], bootstrap=50, out=tmp_path / "f",
                              progress=False)
    assert set(r["table"]) == {"random", "centre", "gradcam", "layercam"} and r["images"] == 8
    assert {s["method"] for s in r["sanity"]} == {"gradcam", "layercam"}
    md = (tmp_path / "f" / "faithfulness.md").read_text()
    for method in ("gradcam", "layercam"):  # the verdict line says what the table's intervals say
        won = [m for m in METRICS if all(v["verdict"] == "beats" for v in r["table"][method][m]["vs"].values())]
        assert r["verdict"][method] == won
        assert f"- {method}: beats random and centre-bias on {', '.join(won) or 'no metric'}\n" in md
    assert "average_drop ↓" in md and "confidence_increase ↑" in md
    assert (tmp_path / "f" / "faithfulness_curves.png").stat().st_size > 5000
    assert len((tmp_path / "f" / "faithfulness.csv").read_text().splitlines()) == 1 + 4 * len(METRICS)


def test_refusals_name_the_thing(tmp_path):
    from types import SimpleNamespace

    for suffix in (".onnx", ".torchscript", ".xml"):
        with pytest.raises(ValueError, match=rf"m{suffix} is an exported artefact .* explanations need the PyTorch"):
            load_explainable(tmp_path / f"m{suffix}")
    with pytest.raises(ValueError, match="ml.pt is a multi-label model: the gallery and the faithfulness scores need"):
        SplitInputs(SimpleNamespace(task="multilabel", path="ml.pt"), None, "test", 4)


def test_cli_explains_images_and_refuses_exported_artefacts(run, tmp_path):
    data, run_dir = run
    image = sorted((data / "test" / "green").glob("*.png"))[0]
    out = run_cli("explain", "--checkpoint", str(run_dir), str(image), "--out", str(tmp_path / "e"), "--json")
    got = json.loads(out.stdout)["explained"][0]
    assert got["layer"] == "layer3" and (tmp_path / "e" / f"{image.stem}.png").is_file()
    (tmp_path / "model.onnx").write_bytes(b"")
    bad = run_cli("explain", "--checkpoint", str(tmp_path / "model.onnx"), str(image), check=False)
    assert bad.returncode == 2 and "explanations need the PyTorch checkpoint" in bad.stderr
    bad = run_cli("explain", "--checkpoint", str(run_dir), str(image), "--layer", "layer7", check=False)
    assert bad.returncode == 2 and "layer 'layer7' is not a module" in bad.stderr and "layer3" in bad.stderr
