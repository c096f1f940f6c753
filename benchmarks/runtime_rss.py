"""Resident memory of a process that loads a ResNet-18 artefact and predicts one image: the torch-free runtime
(``resnetlab.runtime``, with torch made unimportable) on ONNX Runtime and on OpenVINO, against
``resnetlab.Predictor`` (which imports torch) on the same artefacts.

Each case runs in a fresh process, ``--repeats`` times; reported: peak RSS (``VmHWM``: ``ru_maxrss`` would count
the parent's pages a fork shared) and the RSS after the prediction (``VmRSS``), median [min, max].
Rule, from issue 15, fixed before the run: the torch-free runtime's peak RSS is at most 200 MiB with either
runtime.

    python benchmarks/runtime_rss.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, fmt_spread, header_md, spread, write  # noqa: E402

LIMIT_MIB = 200.0
CHILD = """
import json, sys, time
if sys.argv[1].startswith("lite"):
    sys.modules["torch"] = None
    from resnetlab.runtime import LitePredictor
    P = lambda path: LitePredictor(path, low_memory=sys.argv[1] == "lite-low-memory")
else:
    from resnetlab import Predictor as P
p = P(sys.argv[2])
top = p.predict([sys.argv[3]], topk=1)[0][0]
status = {l.split(":")[0]: int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("Vm")}
print(json.dumps({"peak_mib": status["VmHWM"], "rss_mib": status["VmRSS"],
                  "top1": top[0], "torch_loaded": "torch" in sys.modules and sys.modules["torch"] is not None}))
x = p.preprocess([sys.argv[3]])
x = x.numpy() if hasattr(x, "numpy") else x
for _ in range(3):
    p.runtime(x)
times = []
for _ in range(30):
    t0 = time.perf_counter()
    p.runtime(x)
    times.append(time.perf_counter() - t0)
print(json.dumps({"batch1_ms": 1e3 * sorted(times)[len(times) // 2]}))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    env = environment()
    import torch

    from resnetlab import create_model
    from resnetlab.deploy.export import export_model
    from resnetlab.deploy.meta import ModelMeta

    tmp = Path(tempfile.mkdtemp(prefix="rss-"))
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=1000).eval()
    meta = ModelMeta.for_module(model)
    files = {"onnx": tmp / "r18.onnx", "openvino": tmp / "r18.xml"}
    for fmt, path in files.items():
        export_model(model, meta, path, fmt, dynamic_batch=True)
    image = tmp / "cat.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(image)
    rows = {}
    for r in range(args.repeats):
        for kind in ("lite", "lite-low-memory", "predictor"):
            for fmt, path in files.items():
                if kind == "lite-low-memory" and fmt != "onnx":
                    continue
                out = subprocess.run([sys.executable, "-c", CHILD, kind, str(path), str(image)], capture_output=True,
                                     text=True, check=True, timeout=300)
                lines = out.stdout.strip().splitlines()
                got = {**json.loads(lines[-2]), **json.loads(lines[-1])}
                rows.setdefault(f"{kind} {fmt}", []).append(got)
                print(f"repeat {r + 1}: {kind} {fmt}: peak {got['peak_mib']:.0f} MiB", file=sys.stderr)
    table = {k: {"peak_mib": spread([g["peak_mib"] for g in v]), "rss_mib": spread([g["rss_mib"] for g in v]),
                 "batch1_ms": spread([g["batch1_ms"] for g in v]),
                 "torch_loaded": any(g["torch_loaded"] for g in v), "top1_same": len({g["top1"] for g in v}) == 1}
             for k, v in rows.items()}
    worst = max(table[f"lite {f}"]["peak_mib"]["max"] for f in files)
    verdict = {"rule": f"torch-free runtime peak RSS <= {LIMIT_MIB:.0f} MiB (ONNX Runtime and OpenVINO)",
               "worst_peak_mib": worst, "pass": worst <= LIMIT_MIB}
    payload = {"env": env, "repeats": args.repeats, "rows": table, "verdict": verdict}
    write("runtime_rss", payload, markdown(env, payload), Path(args.out))
    return 0


def markdown(env: dict, payload: dict) -> str:
    lines = ["# Memory of one prediction: torch-free runtime against the Predictor", "", header_md(env), "",
             f"ResNet-18 (1000 classes, 224 px, random weights) exported with `resnetlab export` (dynamic batch); "
             f"a fresh process loads it and predicts one 500x375 JPEG (the memory columns), then times 30 batch-1 "
             f"calls of its runtime (median per process); {payload['repeats']} processes per row; "
             "median [min, max].", "",
             "| process | runtime | torch imported | peak RSS MiB | RSS after MiB | batch-1 ms (after) |",
             "|---|---|---|---|---|---|"]
    for key, r in payload["rows"].items():
        kind, fmt = key.split()
        who = {"lite": "resnetlab.runtime.LitePredictor", "lite-low-memory": "LitePredictor(low_memory=True)",
               "predictor": "resnetlab.Predictor"}[kind]
        lines.append(f"| {who} | {fmt} | {'yes' if r['torch_loaded'] else 'no'} | "
                     f"{fmt_spread(r['peak_mib'], digits=0)} | {fmt_spread(r['rss_mib'], digits=0)} | "
                     f"{fmt_spread(r['batch1_ms'], digits=1)} |")
    v = payload["verdict"]
    lines += ["", f"**Verdict** ({v['rule']}, default settings): worst peak {v['worst_peak_mib']:.0f} MiB — "
              f"**{'pass' if v['pass'] else 'fail'}**. `low_memory=True` (ONNX Runtime without its NCHWc weight "
              "copies) is shown beside it with its latency: it trades speed for the memory.",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
