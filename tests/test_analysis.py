"""The residual story as experiments: gradient flow, degradation, shortcut and BN ablations."""

import csv
import json
import math
import subprocess
import sys

import pytest
import torch
import yaml
from train_helpers import ROOT, run_cli, write_tree

import resnetlab
from resnetlab.analysis import experiments as ex
from resnetlab.analysis import measure, run_gradflow, weight_layers
from resnetlab.analysis.experiments import GRADFLOW_BASE, cifar_net, run_degradation, run_experiment
from resnetlab.analysis.report import command_line, provenance, write_csv
from resnetlab.analysis.verdicts import compare, degradation_verdict, seed_stats
from resnetlab.train import engine
from resnetlab.train.config import TrainConfig


def _fp32() -> str:
    """The engine's name for full precision ('off' once amp gains 'auto', 'none' before)."""
    for value in ("off", "none"):
        try:
            TrainConfig().replace(amp=value)
            return value
        except ValueError:
            pass
    raise AssertionError("no full-precision amp setting")


TINY = {"batch_size": 12, "eval_batch_size": 12, "threads": 1, "workers": 0}
FAST = {"amp": _fp32(), "channels_last": False}


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("analysis") / "colours")


# --- verdicts: pure functions over known numbers -------------------------------------------------------

def _curves(finals: dict[str, list[float | None]]) -> dict:
    """{net: {seed: rows}} whose last row's training error is the given value (a first row is noise)."""
    return {net: {s: ([] if v is None else [{"epoch": 1, "train_error": 0.9}, {"epoch": 2, "train_error": v}])
                  for s, v in enumerate(values)} for net, values in finals.items()}


PAPER_LIKE = {"plain20": [0.10, 0.11], "plain32": [0.15, 0.16], "plain56": [0.25, 0.27],
              "resnet20": [0.10, 0.11], "resnet32": [0.09, 0.10], "resnet56": [0.08, 0.09]}


def test_seed_stats_mean_range_and_missing():
    s = seed_stats([0.1, 0.3])
    assert s.mean == pytest.approx(0.2) and s.spread == pytest.approx(0.2) and (s.lo, s.hi) == (0.1, 0.3)
    assert "20.00 % (10.00–30.00 over 2 seeds)" == s.text()
    one = seed_stats([0.1])
    assert math.isnan(one.spread) and one.text() == "10.00 % (1 seed)"
    part = seed_stats([0.1, None, float("nan")])
    assert part.n == 1 and not part.complete and "2 diverged" in part.text()


def test_degradation_verdict_paper_like_curves_hold_at_every_depth():
    v = degradation_verdict(_curves(PAPER_LIKE), [56, 20, 32])  # order of depths does not matter
    assert v.plain_ok is True and v.residual_ok is True and v.shown
    assert [c.claim.split()[0] for c in v.plain] == ["plain32", "plain56"]  # every step, in depth order
    assert len(v.residual) == 3  # every pair of depths
    assert v.finals["plain56"].mean == pytest.approx(0.26)
    assert "shows both" in ex.degradation_conclusion(v, epochs=4, seeds=2)


def test_degradation_verdict_non_monotone_plain_fails_at_that_step():
    curves = _curves({**PAPER_LIKE, "plain32": [0.05, 0.06]})  # the middle plain net trains best
    v = degradation_verdict(curves, [20, 32, 56])
    assert v.plain_ok is False and [c.ok for c in v.plain] == [False, True]
    text = ex.degradation_conclusion(v, epochs=1, seeds=2)
    assert "does not show the paper's effect" in text and "plain32 trains worse than plain20" in text


def test_degradation_verdict_plain_step_within_the_spread_is_not_enough():
    # plain32 is worse on average (+1 point) but the seeds spread over 4 points: not shown
    curves = _curves({**PAPER_LIKE, "plain20": [0.08, 0.12], "plain32": [0.10, 0.12]})
    v = degradation_verdict(curves, [20, 32, 56])
    assert v.plain[0].ok is False and "spread of 4.00" in v.plain[0].detail and v.plain_ok is False
    # the same mean step with a tight spread passes
    tight = degradation_verdict(_curves({**PAPER_LIKE, "plain20": [0.10, 0.10], "plain32": [0.11, 0.11]}),
                                [20, 32, 56])
    assert tight.plain[0].ok is True


def test_degradation_verdict_residual_rise_within_spread_passes_beyond_fails():
    within = degradation_verdict(_curves({**PAPER_LIKE, "resnet56": [0.10, 0.12]}), [20, 32, 56])
    assert within.residual_ok is True  # +0.5 point over resnet20, spread 2 points
    beyond = degradation_verdict(_curves({**PAPER_LIKE, "resnet56": [0.14, 0.15]}), [20, 32, 56])
    assert beyond.residual_ok is False and not beyond.shown
    assert [c.ok for c in beyond.residual] == [True, False, False]  # 20-32 fine; both pairs with 56 fail


def test_degradation_verdict_catches_drift_that_no_single_step_shows():
    # each step rises by 1 point within a 1.5-point spread, but resnet56 is 2 points above resnet20
    curves = _curves({**PAPER_LIKE, "resnet20": [0.095, 0.11], "resnet32": [0.105, 0.12],
                      "resnet56": [0.115, 0.13]})
    v = degradation_verdict(curves, [20, 32, 56])
    assert [c.ok for c in v.residual] == [True, False, True] and v.residual_ok is False


def test_degradation_verdict_undecided_with_one_seed_or_a_diverged_run():
    one = degradation_verdict(_curves({k: v[:1] for k, v in PAPER_LIKE.items()}), [20, 32, 56])
    assert one.plain_ok is None and one.residual_ok is None and not one.shown
    assert "one seed" in one.plain[0].detail and "No verdict" in ex.degradation_conclusion(one, 3, 1)
    diverged = degradation_verdict(_curves({**PAPER_LIKE, "plain56": [0.25, None]}), [20, 32, 56])
    assert diverged.plain[1].ok is None and "diverged" in diverged.plain[1].detail and diverged.plain_ok is None
    assert diverged.residual_ok is True
    with pytest.raises(ValueError, match="at least two"):
        degradation_verdict(_curves(PAPER_LIKE), [20])


def test_compare_rule_beats_tie_and_no_conclusion():
    win = compare("B", [0.80, 0.82], "A", [0.70, 0.71], what="top-1", higher_is_better=True)
    assert win.winner == "B" and "beats A" in win.text and "more than the spread of 2.00 points" in win.text
    lose = compare("B", [0.70, 0.71], "A", [0.80, 0.82], what="top-1", higher_is_better=True)
    assert lose.winner == "A"
    tie = compare("B", [0.75, 0.80], "A", [0.74, 0.76], what="top-1", higher_is_better=True)
    assert tie.winner == "tie" and "no difference" in tie.text
    loss = compare("x", [0.5, 0.6], "y", [1.2, 1.3], what="loss", higher_is_better=False, scale=1, unit="")
    assert loss.winner == "x"
    assert compare("B", [0.8], "A", [0.7], what="top-1", higher_is_better=True).winner is None  # one seed
    assert compare("a", [None, None], "b", [1.0, 1.1], what="loss", higher_is_better=False).winner == "b"
    partial = compare("a", [None, 0.5], "b", [1.0, 1.1], what="loss", higher_is_better=False)
    assert partial.winner is None and "diverged" in partial.text


# --- provenance and files ------------------------------------------------------------------------------

def test_command_line_and_provenance(tmp_path):
    assert command_line(["/x/site-packages/resnetlab/__main__.py", "degradation", "--depths", "20,32"]) == \
        "python -m resnetlab degradation --depths 20,32"
    assert command_line(["benchmarks/analysis_docs.py", "--quick"]) == "python benchmarks/analysis_docs.py --quick"
    assert command_line(["/venv/bin/resnetlab", "experiment", "a b"]) == "resnetlab experiment 'a b'"
    facts = provenance()
    assert {"git", "dirty", "command", "torch", "resnetlab", "python", "date"} <= set(facts)
    assert facts["dirty"] in (True, False, None)
    write_csv(tmp_path / "t.csv", [{"a": 1}, {"a": 2, "b": 3}])
    assert _rows(tmp_path / "t.csv") == [{"a": "1", "b": ""}, {"a": "2", "b": "3"}]
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temp file left behind


def _assert_provenance(out):
    facts = json.loads((out / "provenance.json").read_text())
    assert facts["git"] and "dirty" in facts and facts["command"]
    for path in out.glob("*.json"):
        if path.name != "provenance.json":
            assert json.loads(path.read_text())["provenance"] == facts, path.name
    report = (out / "report.md").read_text()
    assert "- dirty:" in report and "- command:" in report and "- git:" in report


# --- gradient flow -----------------------------------------------------------------------------------------

def test_weight_layers_in_forward_order_and_plain_twin_minus_projections():
    x = torch.randn(2, 3, 32, 32)
    res = weight_layers(resnetlab.create_model("resnet18"), x)
    plain = weight_layers(resnetlab.create_model("plain18"), x)
    assert [n for n, _, k in res if k != "projection"] == [n for n, _, _ in plain]
    assert [n for n, _, k in res if k == "projection"] == [f"layer{i}.0.downsample.0" for i in (2, 3, 4)]
    assert res[0][0] == "conv1" and res[-1][0] == "fc" and res[1][0] == "layer1.0.conv1"


def test_measure_gives_a_norm_for_every_layer_and_block():
    torch.manual_seed(0)
    model = resnetlab.create_model("resnet20")
    layers, blocks = measure(model, torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    assert len(layers) == 20 and [layer.index for layer in layers] == list(range(1, 21))
    assert all(layer.grad_norm > 0 for layer in layers)
    assert len(blocks) == 9 and all(b.grad_via_shortcut > 0 and b.grad_via_branch > 0 for b in blocks)
    # at an identity shortcut the gradient passes unchanged: via-shortcut equals the gradient at the sum
    assert blocks[0].grad_via_shortcut == pytest.approx(blocks[0].grad_at_sum)
    _, plain_blocks = measure(resnetlab.create_model("plain20"), torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    assert all(b.grad_via_shortcut is None and b.shortcut_norm is None for b in plain_blocks)
    adds = [m for m in model.modules() if isinstance(m, resnetlab.models.layers.ResidualAdd)]
    assert len(adds) == 9 and not any(a._forward_hooks for a in adds)  # the hooks are removed again


def test_gradflow_run_writes_everything(tree, tmp_path):
    out = tmp_path / "gf"
    results = run_gradflow(["resnet20", "plain20"], out=out, data=str(tree), steps=2,
                           base=GRADFLOW_BASE.replace(**TINY, cache_dir=str(tmp_path / "cache")))
    for name in ("gradflow.csv", "blocks.csv", "gradflow.json", "gradflow.png", "blocks.png", "report.md",
                 "config.json", "provenance.json"):
        assert (out / name).is_file(), name
    rows = _rows(out / "gradflow.csv")
    assert len(rows) == 2 * 2 * 20 and {r["time"] for r in rows} == {"init", "trained"}
    assert results["plain20"]["trained"]["ratios"]["layers"] == 20
    report = (out / "report.md").read_text()
    assert "## Question" in report and "## Conclusion" in report and "plain20's first/last" in report
    assert "- recipe: SGD lr 0.1" in report
    _assert_provenance(out)
    assert run_cli("report", str(out)).stdout.strip() == report.strip()


def test_gradflow_random_data_only_on_request(tmp_path):
    out = tmp_path / "gf"
    run_gradflow(["resnet20"], out=out, random_data=True, steps=1,
                 base=GRADFLOW_BASE.replace(**TINY, cache_dir=str(tmp_path / "cache")))
    assert json.loads((out / "config.json").read_text())["data"] == "random noise"


# --- degradation -------------------------------------------------------------------------------------------

def test_degradation_two_seeds_same_init_complete_report(tree, tmp_path, monkeypatch):
    steps = []
    real_step = engine.Trainer._step
    monkeypatch.setattr(engine.Trainer, "_step", lambda self, *a: steps.append(1) or real_step(self, *a))
    out = tmp_path / "deg"
    common = dict(out=out, data=str(tree), cache_dir=str(tmp_path / "cache"), **FAST, **TINY)
    curves = run_degradation([14, 8], epochs=2, train_batches=2, label_smoothing=0.1, **common)
    assert set(curves) == {"plain8", "resnet8", "plain14", "resnet14"}
    assert all(set(per_seed) == {0, 1} for per_seed in curves.values())  # two seeds by default
    assert all(len(rows) == 2 and all(0 <= r["train_error"] <= 1 and 0 <= r["val_error"] <= 1 for r in rows)
               for per_seed in curves.values() for rows in per_seed.values())
    assert len(steps) == 4 * 2 * 2 * 2  # 4 nets x 2 seeds x 2 epochs x 2 batches, all through the engine
    rows = _rows(out / "degradation.csv")
    assert {(r["kind"], r["depth"], r["seed"]) for r in rows} == \
        {(k, d, s) for k in ("plain", "resnet") for d in ("8", "14") for s in ("0", "1")}
    for name in ("degradation.png", "report.md", "degradation.json", "config.json"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "| 8 |" in report and "| 14 |" in report and "mean over 2 seed(s)" in report
    assert "- seeds: 0, 1" in report and "label smoothing 0.1" in report  # setup from the config used
    assert "changed from the preset: label_smoothing=0.1" in report and "only 2 batches per epoch" in report
    assert "for plain and residual nets alike" in report and "zero-initialised" not in report
    assert "(i) plain nets:" in report and "(ii) residual nets:" in report
    verdict = json.loads((out / "degradation.json").read_text())["verdict"]
    assert len(verdict["plain"]) == 1 and len(verdict["residual"]) == 1
    assert verdict["shown"] == degradation_verdict(curves, [8, 14]).shown
    conclusion = report.split("## Conclusion")[1]
    assert ("shows both" in conclusion) == verdict["shown"]
    _assert_provenance(out)
    saved = yaml.safe_load((out / "train" / "resnet14-seed1" / "config.yaml").read_text())
    assert saved["label_smoothing"] == 0.1 and saved["seed"] == 1  # the recipe reaches every run
    assert "zero_init_residual" not in saved["model_kwargs"]

    # run again into the same folder: each run starts afresh (no doubled curves), and the flag is visible
    steps.clear()
    again = run_degradation([8, 14], epochs=1, train_batches=1, seeds=[3, 4], zero_init_residual=True, **common)
    assert all(len(rows) == 1 for per_seed in again.values() for rows in per_seed.values())
    assert len(steps) == 4 * 2
    metrics = (out / "train" / "plain8-seed0" / "metrics.jsonl")
    assert len(metrics.read_text().splitlines()) == 2  # the first call's run, untouched by the second
    resnet = yaml.safe_load((out / "train" / "resnet8-seed3" / "config.yaml").read_text())
    plain = yaml.safe_load((out / "train" / "plain8-seed3" / "config.yaml").read_text())
    assert resnet["model_kwargs"].get("zero_init_residual") is True
    assert "zero_init_residual" not in plain["model_kwargs"]
    report = (out / "report.md").read_text()
    assert "- seeds: 3, 4" in report and "the families start differently" in report


def test_degradation_one_seed_gives_no_verdict(tree, tmp_path):
    out = tmp_path / "deg1"
    run_degradation([8, 14], out=out, data=str(tree), epochs=1, train_batches=1, seeds=[0],
                    cache_dir=str(tmp_path / "cache"), **FAST, **TINY)
    report = (out / "report.md").read_text()
    assert "No verdict" in report and "undecided" in report


def test_degradation_diverged_runs_are_results_not_numbers(tree, tmp_path):
    out = tmp_path / "degdiv"
    curves = run_degradation([8, 14], out=out, data=str(tree), epochs=1, train_batches=3, lr=1e12, warmup_epochs=0,
                             cache_dir=str(tmp_path / "cache"), **FAST, **TINY)
    assert set(curves) == {"plain8", "resnet8", "plain14", "resnet14"}  # every run finished, as a result
    data = json.loads((out / "degradation.json").read_text())
    assert any(f["diverged"] for f in data["finals"].values())
    assert data["verdict"]["shown"] is False
    report = (out / "report.md").read_text()
    assert "Diverged runs:" in report and "undecided" in report


def test_degradation_checks_depths():
    with pytest.raises(ValueError, match="6n\\+2"):
        cifar_net("plain", 21)
    assert cifar_net("plain", 14) == ("plain20", {"layers": (2, 2, 2)}) and cifar_net("resnet", 56) == ("resnet56", {})
    with pytest.raises(ValueError, match="6n\\+2"):
        run_degradation([8, 21], out="/nonexistent/never-written", epochs=1)
    assert ex.resolve_seeds() == (0, 1) and ex.resolve_seeds(seed=5) == (5, 6) and ex.resolve_seeds([2]) == (2,)
    with pytest.raises(ValueError, match="distinct"):
        ex.resolve_seeds([1, 1])


def test_budget_plan_counts_every_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(ex, "_probe_speed", lambda base, model, kwargs, out: (100.0, 1000, 300, 600))
    base = ex.DEGRADATION_PRESETS["cpu"]
    epochs1, plan1 = ex.plan_epochs([20, 32], 10.0, base, tmp_path, n_seeds=1)
    epochs2, plan2 = ex.plan_epochs([20, 32], 10.0, base, tmp_path, n_seeds=2)
    per_run = 1000 / 100 + 300 / 300
    assert plan1["epoch_seconds_all_runs"] == pytest.approx(2 * 2 * per_run)
    assert plan2["epoch_seconds_all_runs"] == pytest.approx(2 * plan1["epoch_seconds_all_runs"])
    assert plan2["runs"] == 8 and plan2["fixed_seconds"] == pytest.approx(8 * 600 / 300)  # the test split, once
    assert epochs2 == int((600 * 0.92 - 16) // (8 * per_run)) and epochs1 > epochs2
    _, plan = ex.plan_epochs([20], 10.0, base.replace(limit_train_batches=2, batch_size=100), tmp_path)
    assert plan["epoch_seconds_all_runs"] == pytest.approx(4 * (200 / 100 + 300 / 300))


def test_budget_plan_from_probed_speeds(tree, tmp_path):
    base = ex.DEGRADATION_PRESETS["cpu"].replace(data=str(tree), cache_dir=str(tmp_path / "cache"), **FAST, **TINY)
    epochs, plan = ex.plan_epochs([8, 14], 5.0, base, tmp_path / "plan")
    assert epochs >= 1 and set(plan["img_per_s"]) == {8, 14} and plan["epoch_seconds_all_runs"] > 0
    with pytest.raises(ValueError, match="does not fit one epoch of all 4 runs"):
        run_degradation([8], out=tmp_path / "deg", data=str(tree), budget_minutes=1e-6,
                        cache_dir=str(tmp_path / "cache"), **FAST, **TINY)


# --- shortcut and batch-norm experiments -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["shortcuts", "batchnorm"])
def test_experiments_run_and_conclude_from_numbers(name, tree, tmp_path):
    out = tmp_path / name
    results = run_experiment(name, out=out, data=str(tree), epochs=1, depth=8, train_batches=2,
                             cache_dir=str(tmp_path / "cache"), **FAST, **TINY)
    assert len(results) == 4 and all(set(r["seeds"]) == {0, 1} for r in results.values())
    for f in ("report.md", f"{name}.csv", f"{name}.json", "config.json"):
        assert (out / f).is_file(), f
    rows = _rows(out / f"{name}.csv")
    assert {r["seed"] for r in rows} == {"0", "1"} and len(rows) == 4 * 2
    report = (out / "report.md").read_text()
    conclusion = report.split("## Conclusion")[1].strip()
    lines = [ln for ln in conclusion.splitlines() if ln.startswith("- ")]
    assert len(lines) == (3 if name == "shortcuts" else 4)  # one computed comparison per pair, nothing else
    assert all(("spread" in ln or "no conclusion" in ln or "diverged" in ln) for ln in lines), conclusion
    assert conclusion.startswith("Under the rule stated above:")
    assert "Rule (fixed in code)" in report
    _assert_provenance(out)
    if name == "shortcuts":
        params = {k: r["params"] for k, r in results.items()}
        assert params["option A"] == params["plain (no shortcut)"] < params["option B"] < params["option C"]
        assert (out / "shortcuts.png").is_file()
    else:
        assert (out / "loss.png").is_file()
        assert all(run.steps or run.diverged for r in results.values() for run in r["seeds"].values())


# --- the docs generator ----------------------------------------------------------------------------------

def test_analysis_docs_quick_mode(tmp_path):
    dest = tmp_path / "docs"
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "analysis_docs.py"), "--quick", "--dest",
                          str(dest), "--runs", str(tmp_path / "runs")], capture_output=True, text=True, cwd=ROOT,
                         timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("gradflow/report.md", "gradflow/gradflow.png", "gradflow/provenance.json",
                 "degradation/report.md", "degradation/degradation.png", "degradation/provenance.json", "README.md"):
        assert (dest / name).is_file(), name
    facts = json.loads((dest / "degradation" / "provenance.json").read_text())
    assert "analysis_docs.py --quick" in facts["command"]
    readme = (dest / "README.md").read_text()
    assert "analysis_docs.py" in readme and "degradation/report.md" in readme
