"""Training throughput of ResNet-18 (CIFAR stem) on the CIFAR-10 JPEG data, end to end, and whether the
engine trains as well as a plain loop after the same steps.

resnetlab's engine against two plain PyTorch loops of the torchvision-references kind (ImageFolder +
per-image PIL transforms in a DataLoader): FP32 NCHW, and bf16 autocast + channels_last. Same model,
batch, optimizer, learning rate and number of steps. Every (contender, seed) runs in its own process,
contenders interleaved per seed; the seed sets the initial weights, the data order and the augmentation
draws of every contender. Speed: median [min, max] over the seeds; accuracy: top-1 on the full test
split after those steps, mean ± sd over the seeds.

A contender is ``KIND[:key=value;key=value]``. KIND is loop_fp32, loop_bf16_cl or resnetlab. A plain
loop's options switch on, one at a time, what the engine could do differently:
  data=engine              the engine's own batches (resnetlab's ArrayBatches + BatchAugment, its seeded
                           order) instead of ImageFolder + torchvision transforms in a DataLoader
  data=subset              ImageFolder + torchvision transforms in a DataLoader, as by default, but over the
                           engine's training files only (the 45000 left after its held-out validation split)
  no_wd_norm_bias=true     no weight decay on norm weights and biases (resnetlab.train.optim.param_groups)
  schedule=cosine|onecycle, warmup_epochs=F   the engine's lr_factor instead of a constant lr
  label_smoothing=F        label smoothing of the loss
resnetlab's options are TrainConfig fields (e.g. ``resnetlab:no_wd_norm_bias=true;schedule=cosine``).
``seeds=N`` (either kind) runs that contender for the first N seeds only.

    python benchmarks/train_throughput.py --data DATA --steps 200 --seeds 0,1,2

Run time (2 cores): a bf16 contender about 2.7 min per seed at 200 steps (190 img/s plus the test-split
evaluation), FP32 about 5 min; the default set (FP32 on 2 seeds, bf16 loop, engine and the loop over the
engine's files on 3, the matched loop on 1) about 38 min.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, fmt_mean_sd, fmt_spread, header_md, jsonable, spread, write  # noqa: E402

KINDS = ("loop_fp32", "loop_bf16_cl", "resnetlab")
DEFAULT_CONTENDERS = ("loop_fp32:seeds=2,loop_bf16_cl,resnetlab,loop_bf16_cl:data=engine;seeds=1,"
                      "loop_bf16_cl:data=subset")
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
LOOP_OPTIONS = {"data": str, "no_wd_norm_bias": lambda v: str(v).lower() in ("1", "true", "yes"),
                "schedule": str, "warmup_epochs": float, "label_smoothing": float}
PUBLISHED_GAP = {"steps": 200, "engine": 43.69, "loop_bf16_cl": 47.41}  # the table this investigation answers

# Written before the run; the verdict below is computed from these numbers and nothing else.
R1_STEPS, R1_LOSS_TOL, R1_TOP1_TOL = 10, 1e-3, 0.5
R0_IMAGES, R0_TOL = 512, 1e-6
R2_SE, R2_MIN_POINTS = 2.0, 1.0
RULES = f"""\
Rules, fixed before the run:
- R0 (same images, same augmentation): the engine's cached training images equal the JPEG files torchvision's
  ImageFolder decodes (same files in the same order, same labels, uint8-exact pixels), and torchvision's
  RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, given the crop offsets and flips that
  BatchAugment drew, reproduce BatchAugment's batch to within {R0_TOL:g} ({R0_IMAGES} random training images).
  Both draw offsets uniformly from 0..8 and flip with probability 1/2 (RandomCrop.get_params, BatchAugment._crop),
  and both orders are uniform random permutations (RandomSampler, torch.randperm).
- R1 (same step): for every seed both ran, the engine and the plain bf16 loop fed the engine's batches
  (`loop_bf16_cl:data=engine`) agree on the training loss of each of the first {R1_STEPS} steps to within
  {R1_LOSS_TOL:g}, and on top-1 to within {R1_TOP1_TOL} points.
- R2 (gap or noise): gap = mean top-1 of the engine - mean top-1 of the plain bf16 loop over the seeds,
  SE = sqrt(sd_engine^2 / n_engine + sd_loop^2 / n_loop); at least 2 seeds each.
- Verdict: R1 fails -> the engine's step or evaluation differs from the plain loop's; else R0 fails -> the data
  pipelines differ; else |gap| > max({R2_SE:g} SE, {R2_MIN_POINTS:g} point) -> a systematic gap (then in which
  batches are drawn, since the step and the pipeline are the same); else -> no systematic gap: the published
  difference is seed noise (different draws of the same data order and augmentation distributions).
- R3 (which batches, when R2 finds a gap): the plain bf16 loop over the engine's training files only
  (`loop_bf16_cl:data=subset`, torchvision's sampler and transforms) is compared, by R2's rule, with the plain loop
  (d_loop) and with the engine (d_engine). Within the loop and apart from the engine -> the cause is the engine's
  draws (its order and augmentation machinery), not its 45000-image subset; within the engine and apart from the
  loop -> the cause is the subset (the held-out validation split); otherwise -> undecided."""


# --- contenders -----------------------------------------------------------------------------------
def parse_contender(spec: str) -> tuple[str, dict[str, str]]:
    kind, _, rest = spec.partition(":")
    if kind not in KINDS:
        raise SystemExit(f"unknown contender kind {kind!r} in {spec!r}; choose from {', '.join(KINDS)}")
    opts = {}
    for item in filter(None, rest.split(";")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"contender option {item!r} in {spec!r} is not key=value")
        opts[key.strip()] = value.strip()
    if kind != "resnetlab":
        bad = [k for k in opts if k not in LOOP_OPTIONS and k != "seeds"]
        if bad:
            raise SystemExit(f"plain-loop option(s) {bad} in {spec!r}; choose from {', '.join(LOOP_OPTIONS)}, seeds")
    return kind, opts


def _model(seed: int):
    import resnetlab

    torch.manual_seed(seed)
    return resnetlab.create_model("resnet18", num_classes=10, stem="cifar")


def _config_fields() -> set[str]:
    from resnetlab.train.config import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)}


def _engine_config(data: Path, steps: int, batch: int, lr: float, seed: int, out: str, overrides: dict):
    """The benchmark's TrainConfig: what the plain loops do, key by key (keys the engine lacks are left out)."""
    from resnetlab.train.config import load_config

    names = _config_fields()
    want = dict(model="resnet18", model_kwargs={"stem": "cifar"}, data=str(data), epochs=1, max_steps=None,
                limit_train_batches=steps, batch_size=batch, eval_batch_size=500, optimizer="sgd", lr=lr,
                momentum=0.9, nesterov=True, weight_decay=5e-4, no_wd_norm_bias=False, schedule="constant",
                warmup_epochs=0.0, label_smoothing=0.0, mixup=0.0, cutmix=0.0, cutout=0, auto_augment=None,
                crop_pad=4, preset="cifar", ema_decay=0.0, grad_clip=0.0, amp="bf16", channels_last=True,
                compile=False, eval_split="test", val_split=0.0, seed=seed, out=out, log_every_s=30,
                log_loss_every=1, overwrite=True, device="cpu", workers=0)
    unknown = [k for k in overrides if k not in names]
    if unknown:
        raise SystemExit(f"resnetlab option(s) {unknown} are not TrainConfig fields")
    return load_config(None, {**{k: v for k, v in want.items() if k in names}, **overrides})


def engine_train_files(data: Path, steps: int, batch: int, lr: float, seed: int) -> set[str]:
    """The real paths of the files the engine trains on for this seed (train/ minus its held-out validation)."""
    from resnetlab.train.distributed import DistInfo
    from resnetlab.train.loaders import build_data

    bundle = build_data(_engine_config(data, steps, batch, lr, seed, "unused", {}), DistInfo())
    return {os.path.realpath(p) for p in bundle.train.paths}


def engine_batches(data: Path, steps: int, batch: int, lr: float, seed: int):
    """The training batches the engine draws for this seed (resnetlab.train.loaders, as the Trainer calls it)."""
    from resnetlab.train.distributed import DistInfo
    from resnetlab.train.loaders import build_data, make_batches

    cfg = _engine_config(data, steps, batch, lr, seed, "unused", {})
    bundle = build_data(cfg, DistInfo())
    params = inspect.signature(make_batches).parameters
    kw = {"split": "train"} if "split" in params else {"train": True}
    batches = make_batches(bundle, cfg, DistInfo(), **kw)
    return (b[:2] for b in batches.epoch(0)), len(bundle.train)


def plain_loop(data: Path, steps: int, batch: int, lr: float, bf16: bool, workers: int, seed: int,
               opts: dict) -> dict:
    """What a competent user writes from the torchvision references (with the options' changes)."""
    from torchvision import datasets, transforms

    o = {k: LOOP_OPTIONS[k](v) for k, v in opts.items() if k in LOOP_OPTIONS}
    test_tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    test = datasets.ImageFolder(data / "test", test_tf)
    if o.get("data", "torchvision") == "engine":
        loader, num_train = engine_batches(data, steps, batch, lr, seed)
        loader_workers = 0
    elif o.get("data", "torchvision") in ("torchvision", "subset"):
        train_tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                       transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
        keep = engine_train_files(data, steps, batch, lr, seed) if o.get("data") == "subset" else None
        valid = None if keep is None else (lambda path: os.path.realpath(path) in keep)
        train = datasets.ImageFolder(data / "train", train_tf, is_valid_file=valid)
        g = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(train, batch, shuffle=True, num_workers=workers, drop_last=True,
                                             generator=g, persistent_workers=workers > 0)
        loader_workers, num_train = workers, len(train)
    else:
        raise SystemExit(f"data={o['data']!r}: choose torchvision, engine or subset")
    model = _model(seed)
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    model = model.to(memory_format=fmt)
    if o.get("no_wd_norm_bias"):
        from resnetlab.train.optim import param_groups

        params = param_groups(model, 5e-4, True)
    else:
        params = model.parameters()
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = None
    if o.get("schedule", "constant") != "constant" or o.get("warmup_epochs"):
        from resnetlab.train.config import load_config
        from resnetlab.train.optim import lr_factor

        cfg = load_config(None, {"lr": lr, "epochs": 1, "schedule": o.get("schedule", "constant"),
                                 "warmup_epochs": o.get("warmup_epochs", 0.0)})
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg, steps))
    smoothing = o.get("label_smoothing", 0.0)
    model.train()
    done, wait, t0, losses = 0, 0.0, None, []
    while done < steps:
        t_wait = time.perf_counter()
        for x, y in loader:
            if t0 is None:
                t0 = time.perf_counter()  # start the clock at the first batch (workers spun up)
            else:
                wait += time.perf_counter() - t_wait
            x = x.contiguous(memory_format=fmt)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x).float(), y, label_smoothing=smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(float(loss.detach()))
            done += 1
            if done == steps:
                break
            t_wait = time.perf_counter()
    elapsed = time.perf_counter() - t0
    top1 = _accuracy(model, torch.utils.data.DataLoader(test, 500, num_workers=workers), fmt, bf16)
    return {"img_per_s": (steps - 1) * batch / elapsed, "data_wait_frac": wait / elapsed, "top1": top1,
            "steps": done, "losses": losses, "train_images": num_train, "loader_workers": loader_workers}


@torch.no_grad()
def _accuracy(model, loader, fmt, bf16) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            correct += int((model(x.contiguous(memory_format=fmt)).argmax(1) == y).sum())
        total += len(y)
    return correct / total


def engine(data: Path, steps: int, batch: int, lr: float, seed: int, overrides: dict) -> dict:
    from resnetlab.train.engine import fit

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cfg = _engine_config(data, steps, batch, lr, seed, str(run), overrides)
        res = fit(cfg, overwrite=True) if "overwrite" in inspect.signature(fit).parameters else fit(cfg)
        summary = getattr(res, "summary", res)  # TrainResult, or the summary dict of an older engine
        history = list(getattr(res, "history", None) or [])
        if not history:
            history = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
        steps_file = run / "steps.jsonl"
        losses = [json.loads(r)["loss"] for r in steps_file.read_text().splitlines()] if steps_file.is_file() else []
    # top-1 on the test split: "test_top1" where the engine evaluates the test split apart from the
    # validation split that selects best.pt; else the last evaluation (eval_split="test")
    key = next(k for k in ("test_top1", "final_top1") if summary.get(k) is not None)
    return {"img_per_s": history[-1]["img_per_s"], "top1": summary[key], "top1_key": key,
            "steps": summary["steps"], "losses": losses,
            "train_images": getattr(res, "num_train", None) or summary.get("num_train"),
            "selection": summary.get("selection"),
            "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "out"}}


def worker(args) -> None:
    kind, opts = parse_contender(args.worker)
    opts.pop("seeds", None)
    t = time.perf_counter()
    if kind == "resnetlab":
        out = engine(args.data, args.steps, args.batch_size, args.lr, args.seed, opts)
    else:
        out = plain_loop(args.data, args.steps, args.batch_size, args.lr, kind == "loop_bf16_cl", args.workers,
                         args.seed, opts)
    out.update(seed=args.seed, wall_s=time.perf_counter() - t)
    print("RESULT " + json.dumps(jsonable(out)), flush=True)


# --- R0: the two data pipelines, image by image ---------------------------------------------------
def pipeline_check(data: Path, seed: int = 0, n: int = R0_IMAGES) -> dict:
    """Do the engine's batches hold the pixels torchvision's pipeline makes, given the same draws?"""
    import numpy as np
    import torchvision.transforms.functional as TF
    from torchvision import datasets

    from resnetlab.data import BatchAugment, open_dataset
    from resnetlab.data.batches import generator

    ds = open_dataset(data, "train", progress=False)
    tv = datasets.ImageFolder(data / "train")
    tail = lambda p: "/".join(Path(p).parts[-2:])  # noqa: E731  (class/file)
    same_files = ds.paths is not None and [tail(p) for p in ds.paths] == [tail(p) for p, _ in tv.samples]
    same_labels = [tv.classes[c] for _, c in tv.samples] == [ds.classes[int(t)] for t in ds.targets]
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False))
    decoded = np.stack([np.asarray(tv.loader(tv.samples[i][0]), dtype=np.uint8) for i in idx])
    pixels_equal = bool(np.array_equal(decoded, ds.images[idx]))
    aug = BatchAugment(train=True, mean=MEAN, std=STD, crop_pad=4, flip=True)
    engine_x = aug(torch.from_numpy(np.ascontiguousarray(ds.images[idx])), generator(seed, 0, 0, 1))
    g = generator(seed, 0, 0, 1)  # the same draws, in BatchAugment's order: row offsets, column offsets, flips
    oy = torch.randint(0, 9, (len(idx),), generator=g)
    ox = torch.randint(0, 9, (len(idx),), generator=g)
    flip = torch.rand(len(idx), generator=g) < 0.5
    tv_x = []
    for j, i in enumerate(idx):
        img = TF.crop(TF.pad(tv.loader(tv.samples[i][0]), 4, fill=0), int(oy[j]), int(ox[j]), 32, 32)
        img = TF.hflip(img) if flip[j] else img
        tv_x.append(TF.normalize(TF.to_tensor(img), MEAN, STD))
    diff = float((torch.stack(tv_x) - engine_x).abs().max())
    return {"images": len(idx), "same_files": bool(same_files), "same_labels": bool(same_labels),
            "pixels_equal": pixels_equal, "augment_max_abs_diff": diff, "train_images": len(ds),
            "flips": int(flip.sum()), "offsets_seen": sorted({int(v) for v in torch.cat([oy, ox])}),
            "pass": bool(same_files and same_labels and pixels_equal and diff <= R0_TOL)}


# --- the run ---------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="CIFAR-10 ImageFolder (or its archive); default: as resnetlab finds it")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the plain loops")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--only", default=DEFAULT_CONTENDERS, help=f"contenders (default {DEFAULT_CONTENDERS})")
    p.add_argument("--skip-pipeline-check", action="store_true", help="skip R0 (the image-by-image check)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--merge", type=Path, default=None,
                   help="an earlier train_throughput.json made with the same steps, batch, lr and workers at a commit "
                        "whose src/ is this one's: its runs count as run here (more seeds without rerunning)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.data = Path(args.data)
        return worker(args)
    from resnetlab.data import resolve_data_root

    env = environment()
    args.data = resolve_data_root(args.data)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds:
        p.error("--seeds needs at least one seed")
    names = [c.strip() for c in args.only.split(",") if c.strip()]
    limits = {}
    for name in names:
        _, opts = parse_contender(name)
        limits[name] = int(opts.get("seeds", len(seeds)))
    merged = load_merge(args) if args.merge else None
    check = merged["check"] if merged and args.skip_pipeline_check else (
        None if args.skip_pipeline_check else pipeline_check(args.data, seeds[0]))
    if check:
        print(f"R0 pipeline check: {check}", file=sys.stderr, flush=True)
    runs: dict[str, list[dict]] = {**(merged["runs"] if merged else {}), **{n: [] for n in names
                                                                          if not merged or n not in merged["runs"]}}
    t0 = time.perf_counter()
    for si, seed in enumerate(seeds):
        for name in names:  # interleaved: every seed runs each contender once
            if si >= limits[name] or any(r["seed"] == seed for r in runs[name]):
                continue
            cmd = [sys.executable, __file__, "--worker", name, "--data", str(args.data), "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--workers", str(args.workers),
                   "--seed", str(seed)]
            print(f"[seed {seed} | {time.perf_counter() - t0:.0f} s] {name} ...", file=sys.stderr, flush=True)
            out = subprocess.run(cmd, capture_output=True, text=True)
            line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"{name} (seed {seed}) failed:\n{out.stderr[-3000:]}")
            runs[name].append(json.loads(line[7:]))
            r = runs[name][-1]
            print(f"  top-1 {100 * r['top1']:.2f} %, {r['img_per_s']:.1f} img/s, {r['wall_s']:.0f} s",
                  file=sys.stderr, flush=True)
    seeds = sorted({r["seed"] for rs in runs.values() for r in rs})
    report(args, env, seeds, runs, check, time.perf_counter() - t0, merged)


def load_merge(args) -> dict:
    """The runs of an earlier results file, refused unless they measured the same thing with the same src/."""
    prev = json.loads(args.merge.read_text())
    same = {k: prev["args"].get(k) for k in ("steps", "batch_size", "lr", "workers")}
    want = {k: getattr(args, k) for k in same}
    if same != want:
        raise SystemExit(f"--merge {args.merge}: made with {same}, this run uses {want}")
    commit = prev["env"].get("git")
    diff = subprocess.run(["git", "diff", "--quiet", str(commit), "HEAD", "--", "src"], cwd=Path(__file__).parents[1])
    if not commit or prev["env"].get("dirty") or diff.returncode != 0:
        raise SystemExit(f"--merge {args.merge}: made at {commit} (dirty {prev['env'].get('dirty')}); its src/ "
                         "must be this checkout's, on a clean tree")
    n = sum(len(v) for v in prev["runs"].values())
    print(f"merging {n} runs from {args.merge} (commit {commit}, src/ identical)", file=sys.stderr, flush=True)
    return {"runs": {k: list(v) for k, v in prev["runs"].items()}, "check": prev.get("pipeline_check"),
            "file": str(args.merge), "commit": commit, "command": prev["env"].get("command"), "n_runs": n}


# --- verdict and report ----------------------------------------------------------------------------
def gap_verdict(runs: dict[str, list[dict]], check: dict | None) -> dict:
    """R0-R2 (see RULES) on this run's numbers."""
    e = {r["seed"]: r for r in runs.get("resnetlab", [])}
    p = {r["seed"]: r for r in runs.get("loop_bf16_cl", [])}
    matched = next((v for k, v in runs.items() if k.startswith("loop_bf16_cl:") and parse_contender(k)[1].get(
        "data") == "engine" and set(parse_contender(k)[1]) <= {"data", "seeds"}), [])
    m = {r["seed"]: r for r in matched}
    r1_rows = []
    for seed in sorted(set(e) & set(m)):
        le, lm = e[seed]["losses"][:R1_STEPS], m[seed]["losses"][:R1_STEPS]
        dl = max((abs(a - b) for a, b in zip(le, lm)), default=math.inf) if len(le) == len(lm) == R1_STEPS \
            else math.inf
        all_steps = [abs(a - b) for a, b in zip(e[seed]["losses"], m[seed]["losses"])]
        dt = 100 * abs(e[seed]["top1"] - m[seed]["top1"])
        r1_rows.append({"seed": seed, "max_loss_diff_first_steps": dl,
                        "max_loss_diff_all_steps": max(all_steps) if all_steps else None,
                        "identical_steps": next((i for i, d in enumerate(all_steps) if d != 0), len(all_steps)),
                        "top1_diff_points": dt, "pass": dl <= R1_LOSS_TOL and dt <= R1_TOP1_TOL})
    r1 = None if not r1_rows else all(r["pass"] for r in r1_rows)
    r0 = None if check is None else check["pass"]
    te, tp = [100 * r["top1"] for r in e.values()], [100 * r["top1"] for r in p.values()]
    out = {"R0": r0, "R1": r1, "R1_rows": r1_rows, "n_engine": len(te), "n_loop": len(tp)}
    if len(te) >= 2 and len(tp) >= 2:
        r2 = _apart(te, tp)
        paired = [100 * (e[s]["top1"] - p[s]["top1"]) for s in sorted(set(e) & set(p))]
        out.update(gap=r2["diff"], se=r2["se"], threshold=r2["threshold"], paired_gaps=paired,
                   loop_seed_range=max(tp) - min(tp), engine_seed_range=max(te) - min(te))
        systematic = r2["apart"]
    else:
        systematic = None
    out["R3"] = _which_batches(runs, te, tp) if systematic else None
    if r1 is False:
        out["verdict"] = "cause in the engine: its step or evaluation differs from the plain loop's on the same batches"
    elif r0 is False:
        out["verdict"] = ("cause in the data pipeline: the engine's batches differ from torchvision's given the same "
                          "draws")
    elif systematic is None:
        out["verdict"] = "inconclusive: the gap needs at least 2 seeds of the engine and of the plain bf16 loop"
    elif systematic:
        out["verdict"] = (f"systematic gap of {out['gap']:+.2f} points (> {out['threshold']:.2f}); the step "
                          + ("and the pipeline are the same (R0, R1), so the cause is in which batches are drawn"
                             if r0 and r1 else "was not compared (R0/R1 not run)")
                          + (f"; R3: {out['R3']['cause']}" if out.get("R3") else ""))
    else:
        out["verdict"] = (f"no systematic gap: {out['gap']:+.2f} points, within {out['threshold']:.2f} "
                          f"(max({R2_SE:g} SE, {R2_MIN_POINTS:g})); "
                          + ("the engine runs the plain loop's step on the same pixels (R0, R1), so the published "
                             "difference is seed noise" if r0 and r1 else
                             "R0/R1 not run, so the step was not compared"))
    return out


def _apart(a: list[float], b: list[float]) -> dict:
    """R2's rule between two sets of per-seed top-1s (points): difference, SE, threshold, apart or not."""
    d = statistics.fmean(a) - statistics.fmean(b)
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    thr = max(R2_SE * se, R2_MIN_POINTS)
    return {"diff": d, "se": se, "threshold": thr, "apart": abs(d) > thr}


def _which_batches(runs: dict[str, list[dict]], te: list[float], tp: list[float]) -> dict | None:
    """R3: the plain loop over the engine's training files against the plain loop and against the engine."""
    sub = next((v for k, v in runs.items() if k.startswith("loop_bf16_cl:") and parse_contender(k)[1].get(
        "data") == "subset" and set(parse_contender(k)[1]) <= {"data", "seeds"}), [])
    ts = [100 * r["top1"] for r in sub]
    if len(ts) < 2:
        return {"cause": "not run (needs loop_bf16_cl:data=subset on at least 2 seeds)"}
    d_loop, d_engine = _apart(ts, tp), _apart(ts, te)
    if not d_loop["apart"] and d_engine["apart"]:
        cause = "the engine's draws (its order and augmentation machinery), not its 45000-image subset"
    elif d_loop["apart"] and not d_engine["apart"]:
        cause = "the engine's 45000-image subset (the held-out validation split), not its draws"
    else:
        cause = "undecided: the subset run is " + ("apart from both" if d_loop["apart"] else "within both")
    return {"subset_mean": statistics.fmean(ts), "d_loop": d_loop, "d_engine": d_engine, "cause": cause}


def report(args, env: dict, seeds: list[int], runs: dict[str, list[dict]], check: dict | None, wall: float,
           merged: dict | None = None) -> None:
    stats = {n: {"img_per_s": spread([r["img_per_s"] for r in rs]), "top1": spread([r["top1"] for r in rs]),
                 "data_wait_frac": spread([r.get("data_wait_frac", 0.0) for r in rs]),
                 "seeds": [r["seed"] for r in rs], "train_images": rs[0].get("train_images") if rs else None}
             for n, rs in runs.items() if rs}
    base = stats.get("loop_bf16_cl", {}).get("img_per_s", {}).get("median")
    fp32 = stats.get("loop_fp32", {}).get("img_per_s", {}).get("median")
    labels = {"loop_fp32": "plain loop, FP32 NCHW", "loop_bf16_cl": "plain loop, bf16 autocast + channels_last",
              "resnetlab": "resnetlab engine (bf16 + channels_last, cached uint8 data, batched augmentation)"}

    def label(name: str) -> str:
        kind, opts = parse_contender(name)
        opts.pop("seeds", None)
        words = {("data", "engine"): "the engine's batches", ("data", "subset"): "only the engine's training files"}
        extra = "; ".join(words.get((k, v), f"{k}={v}") for k, v in opts.items())
        return labels[kind] + (f" + {extra}" if extra else "")

    ratio = lambda v, b: f"{v / b:.2f}x" if b else "–"  # noqa: E731
    rows = ["| contender | seeds | img/s median [min, max] | vs bf16 loop | vs FP32 loop | data wait | "
            f"top-1 after {args.steps} steps, mean ± sd | per seed |", "|---|---|---|---|---|---|---|---|"]
    for n, s in stats.items():
        v = s["img_per_s"]
        rows.append(f"| {label(n)} | {','.join(map(str, s['seeds']))} | {fmt_spread(v)} | {ratio(v['median'], base)} "
                    f"| {ratio(v['median'], fp32)} | {100 * s['data_wait_frac']['median']:.1f} % | "
                    f"{fmt_mean_sd(s['top1'], 100, unit=' %')} | "
                    + ", ".join(f"{100 * t:.2f}" for t in s["top1"]["values"]) + " |")
    verdict = gap_verdict(runs, check)
    md = [f"# Training throughput: ResNet-18 (CIFAR stem) on CIFAR-10 JPEGs\n\n{header_md(env)}",
          f"- setup: batch {args.batch_size}, SGD lr {args.lr} (constant), momentum 0.9 Nesterov, wd 5e-4 on every "
          f"parameter, no label smoothing, {args.steps} steps, pad-4 crop + flip; plain loops: torchvision "
          f"ImageFolder + PIL transforms, {args.workers} DataLoader workers; throughput from the first batch to the "
          "last step (evaluation excluded); each (contender, seed) in its own process, contenders interleaved per "
          f"seed; the seed sets initial weights, data order and augmentation draws; {wall / 60:.0f} min in all, "
          f"load average {_load()} at the end (a shared machine: speed ratios move with it, top-1 does not)"]
    if merged:
        md.append(f"- merged: {merged['n_runs']} runs (every seed not run here) from the results of commit "
                  f"{merged['commit']} (`{merged['command']}`), whose src/ is this commit's; R0 "
                  f"{'from that run' if args.skip_pipeline_check else 'rerun here'}; the rules apply to all seeds")
    md += ["", *rows, ""]
    md += gap_section(args, stats, verdict, check)
    write("train_throughput", {"env": env, "args": jsonable(vars(args)), "seeds": seeds, "rules": RULES,
                               "pipeline_check": check, "verdict": verdict, "stats": stats, "runs": runs,
                               "wall_s": wall, "merged": {k: v for k, v in (merged or {}).items() if k != "runs"}
                               or None}, "\n".join(md) + "\n",
          args.out or Path(__file__).resolve().parent / "results")


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "unknown"


def gap_section(args, stats: dict, v: dict, check: dict | None) -> list[str]:
    pub = PUBLISHED_GAP
    lines = ["## Why was the engine behind the plain loop?", "",
             f"The table of 2026-11-28 (one seed, seed 0 for every contender) had the engine at {pub['engine']:.2f} % "
             f"and the plain bf16 loop at {pub['loop_bf16_cl']:.2f} % after {pub['steps']} steps "
             f"({pub['engine'] - pub['loop_bf16_cl']:+.2f} points; an Intel rerun: 35.3 % vs 39.3 % after 120 steps, "
             "the same seed, so the same first 120 batches). Read side by side, the two code paths differ in:", "",
             "- data order: DataLoader's RandomSampler (torch.Generator seeded with the seed) vs the engine's "
             "torch.randperm(generator(seed, epoch)): both uniform random permutations, different draws;",
             "- augmentation: torchvision RandomCrop(32, padding=4) + RandomHorizontalFlip per PIL image in DataLoader "
             "workers vs BatchAugment on the uint8 batch: same offsets 0..8, same flip probability, different draws "
             "(R0 checks the pixels);",
             "- decoding: PIL per step vs PIL once into the uint8 cache (R0 checks the pixels);",
             "- everything else is set equal in this benchmark: initial weights (torch.manual_seed(seed) right before "
             "create_model in both; opening the data draws nothing from torch's RNG), one SGD group with weight "
             "decay on every parameter (no_wd_norm_bias=False, though the engine's default is True), constant lr "
             "(schedule=constant: no warm-up, no cosine), no label smoothing, no EMA / mixup / cutout, fp32 weights "
             "under bf16 autocast, channels_last input and model, the loss on float logits, evaluation in bf16 "
             "autocast on the normalised test images (eval transform: normalise only)."
             + (f" The engine here trained on {stats['resnetlab']['train_images']} images (a validation split "
                "held out of train)" if stats.get("resnetlab", {}).get("train_images") not in (None, 50000) else ""),
             "", RULES, "", "Measured in this run:", ""]
    if check:
        lines.append(f"- R0 ({'pass' if check['pass'] else '**fail**'}): {check['images']} training images, same "
                     f"files {check['same_files']}, same labels {check['same_labels']}, uint8-equal pixels "
                     f"{check['pixels_equal']}; torchvision with BatchAugment's draws vs BatchAugment: max |diff| "
                     f"{check['augment_max_abs_diff']:.2e} (offsets drawn: {check['offsets_seen']}, "
                     f"{check['flips']} flips)")
    else:
        lines.append("- R0: not run (--skip-pipeline-check)")
    if v["R1_rows"]:
        for r in v["R1_rows"]:
            lines.append(f"- R1 seed {r['seed']} ({'pass' if r['pass'] else '**fail**'}): engine vs plain loop on the "
                         f"engine's batches: max |loss diff| over the first {R1_STEPS} steps "
                         f"{r['max_loss_diff_first_steps']:.2e}, over all steps {r['max_loss_diff_all_steps']:.2e} "
                         f"(bit-identical for the first {r['identical_steps']} steps); top-1 differs by "
                         f"{r['top1_diff_points']:.2f} points")
    else:
        lines.append("- R1: not run (no `loop_bf16_cl:data=engine` contender beside the engine)")
    if "gap" in v:
        lines.append(f"- R2: engine {fmt_mean_sd(stats['resnetlab']['top1'], 100, unit=' %')} vs plain bf16 loop "
                     f"{fmt_mean_sd(stats['loop_bf16_cl']['top1'], 100, unit=' %')}: gap {v['gap']:+.2f} points, "
                     f"SE {v['se']:.2f}, threshold {v['threshold']:.2f}; per seed (engine - loop): "
                     + ", ".join(f"{g:+.2f}" for g in v["paired_gaps"])
                     + f"; the plain loop alone spans {v['loop_seed_range']:.2f} points across seeds, the engine "
                     f"{v['engine_seed_range']:.2f}")
    r3 = v.get("R3")
    if r3 and "d_loop" in r3:
        dl, de = r3["d_loop"], r3["d_engine"]
        lines.append(f"- R3: the plain loop over the engine's training files {r3['subset_mean']:.2f} %: "
                     f"{dl['diff']:+.2f} points from the plain loop (threshold {dl['threshold']:.2f}), "
                     f"{de['diff']:+.2f} from the engine (threshold {de['threshold']:.2f}) -> {r3['cause']}")
    elif r3:
        lines.append(f"- R3: {r3['cause']}")
    lines += ["", f"**Verdict: {v['verdict']}.**", ""]
    return lines


if __name__ == "__main__":
    main()
