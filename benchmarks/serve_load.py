"""`resnetlab serve` under load: served throughput and latency against the offline Predictor, with dynamic
batching on and off, errors, and the server's memory over 10,000 requests (loopback only, bounded).

Model: ResNet-18, 224 px, 1000 classes, seeded random weights, FP32, exported as an OpenVINO artefact (what
`backend="auto"` runs here). Requests: one real photo-sized JPEG (a CIFAR-10 test image enlarged to 256 px),
sent as the raw body; every answer's top-1 is checked. Clients: asyncio + httpx in this process, on the same
2 cores as the server (the server's numbers carry that cost).

Rules, fixed before the first run (the issue's targets):
  R1  at 32 clients, batching on: served img/s >= 0.8x the offline Predictor batch-32 img/s (same run);
  R2  at 1 client, batching on: p99 latency <= 1.5x the offline batch-1 latency + 5 ms;
  R3  zero errors (non-200 or a wrong top-1) in every load phase;
  R4  server RSS grows by < 50 MiB over 10,000 requests (32 clients, batching on).
The offline baseline (Predictor on preprocessed tensors: the model alone) runs before and after the
server phases; its median over both is the reference.

    python benchmarks/serve_load.py [--data ../shared/data/cifar10-jpeg.tar.gz]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, fmt_spread, header_md, spread, write  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

CLIENTS = (1, 8, 32, 64)
OFFLINE = r"""
import json, sys, time, torch
from resnetlab import Predictor
p = Predictor(sys.argv[1])
x1, x32 = torch.randn(1, 3, 224, 224), torch.randn(32, 3, 224, 224)
for x in (x1, x32): p.predict_proba(x)
out = {}
for name, x, n in (("b1_ms", x1, 60), ("b32_img_s", x32, 6)):
    t = time.perf_counter()
    for _ in range(n): p.predict_proba(x)
    dt = time.perf_counter() - t
    out[name] = 1000 * dt / n if name == "b1_ms" else 32 * n / dt
print(json.dumps(out))
"""


def make_artefact(work: Path) -> Path:
    xml = work / "resnet18-224.xml"
    if not xml.is_file():
        import torch

        from resnetlab import create_model
        from resnetlab.deploy.export import export_model
        from resnetlab.deploy.meta import ModelMeta

        torch.manual_seed(0)
        model = create_model("resnet18", num_classes=1000).eval()
        export_model(model, ModelMeta.for_module(model, 224), xml, "openvino", dynamic_batch=True)
    return xml


def request_image(data: str | None) -> bytes:
    """A real JPEG (a CIFAR-10 test image from the archive or folder, enlarged to 256 px), else a drawn one."""
    img = None
    if data and Path(data).is_dir():  # an unpacked CIFAR-10 folder
        found = sorted(Path(data).rglob("test/*/*.jpg"))[:1] or sorted(Path(data).rglob("*.jpg"))[:1]
        img = Image.open(found[0]).convert("RGB") if found else None
    elif data and Path(data).is_file():
        with tarfile.open(data) as tar:
            member = next(m for m in tar if m.isfile() and "/test/" in m.name and m.name.endswith(".jpg"))
            img = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
    if img is None:
        y, x = np.mgrid[0:32, 0:32]
        img = Image.fromarray(np.stack([x * 8, y * 8, (x + y) * 4], -1).astype(np.uint8))
    buf = io.BytesIO()
    img.resize((256, 256), Image.Resampling.BICUBIC).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def offline(xml: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", OFFLINE, str(xml)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, xml: Path, port: int, max_batch: int, max_wait_ms: float) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "resnetlab", "serve", "--checkpoint", str(xml), "--port",
                                      str(port), "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
                                      "--max-queue", "1024", "--log-level", "warning"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        end = time.monotonic() + 180
        while time.monotonic() < end:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stderr.read()}")
            time.sleep(0.3)
        raise RuntimeError("the server was not ready within 180 s")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


async def load(url: str, body: bytes, want: str, clients: int, seconds: float, max_requests: int) -> dict:
    """``clients`` loops posting ``body`` until ``seconds`` pass or ``max_requests`` are sent."""
    lat, errors, sent = [], [], 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        t0 = time.perf_counter()
        end = t0 + seconds

        async def one_client() -> None:
            nonlocal sent
            while time.perf_counter() < end and sent < max_requests:
                sent += 1
                s = time.perf_counter()
                try:
                    r = await client.post(url + "/v1/predict?topk=1", content=body,
                                          headers={"content-type": "image/jpeg"})
                    ok = r.status_code == 200 and r.json()["predictions"][0]["top"][0]["class"] == want
                    (lat if ok else errors).append(time.perf_counter() - s if ok else r.status_code)
                except httpx.HTTPError as e:
                    errors.append(type(e).__name__)

        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - t0
    ms = np.asarray(lat) * 1000
    pct = {f"p{q}": float(np.percentile(ms, q)) if len(ms) else None for q in (50, 90, 99)}
    return {"clients": clients, "requests": len(lat) + len(errors), "ok": len(lat), "errors": len(errors),
            "error_kinds": sorted({str(e) for e in errors}), "wall_s": wall, "img_s": len(lat) / wall, **pct}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/cifar10-jpeg.tar.gz", help="CIFAR-10 archive (one JPEG)")
    p.add_argument("--seconds", type=float, default=20.0, help="per load phase")
    p.add_argument("--max-requests", type=int, default=4000, help="per load phase")
    p.add_argument("--rss-requests", type=int, default=10_000)
    p.add_argument("--work", default="runs/bench/serve")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    env, t_start = environment(), time.perf_counter()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    xml, body = make_artefact(work), request_image(args.data)
    from resnetlab import Predictor

    want = Predictor(str(xml)).predict([Image.open(io.BytesIO(body))], topk=1)[0][0][0]
    base = [offline(xml) for _ in range(3)]
    print(f"offline before: {base}", flush=True)
    modes, rss = {}, None
    for mode, (mb, wait) in {"batching on": (32, 5.0), "batching off": (1, 0.0)}.items():
        server = Server(xml, free_port(), mb, wait)
        try:
            asyncio.run(load(server.url, body, want, 8, 3.0, 200))  # warm the connections and caches
            modes[mode] = []
            for c in CLIENTS:
                r = asyncio.run(load(server.url, body, want, c, args.seconds, args.max_requests))
                print(f"{mode}, {c} clients: {r['img_s']:.1f} img/s, p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, "
                      f"{r['errors']} errors", flush=True)
                modes[mode].append(r)
            if mode == "batching on":
                before = rss_mib(server.proc.pid)
                r = asyncio.run(load(server.url, body, want, 32, 3600, args.rss_requests))
                rss = {"before_mib": before, "after_mib": rss_mib(server.proc.pid), "load": r}
                print(f"RSS {before:.0f} -> {rss['after_mib']:.0f} MiB over {r['requests']} requests", flush=True)
        finally:
            server.stop()
    base += [offline(xml) for _ in range(3)]
    print(f"offline after: {base[3:]}", flush=True)
    b1, b32 = spread([b["b1_ms"] for b in base]), spread([b["b32_img_s"] for b in base])
    on = {r["clients"]: r for r in modes["batching on"]}
    verdicts = [
        ("R1 served img/s at 32 clients >= 0.8x offline batch-32", on[32]["img_s"] / b32["median"], 0.8, ">="),
        ("R2 p99 at 1 client <= 1.5x offline batch-1 + 5 ms (ms over the bound)",
         on[1]["p99"] - (1.5 * b1["median"] + 5), 0.0, "<="),
        ("R3 errors in every phase", sum(r["errors"] for m in modes.values() for r in m) + rss["load"]["errors"],
         0, "<="),
        ("R4 RSS growth over the requests (MiB)", rss["after_mib"] - rss["before_mib"], 50, "<"),
    ]
    checks = [{"rule": n, "value": v, "bound": b, "pass": bool(v >= b if op == ">=" else v <= b if op == "<=" else
                                                               v < b)} for n, v, b, op in verdicts]
    payload = {"env": env, "args": vars(args), "offline": {"b1_ms": b1, "b32_img_s": b32, "rounds": base},
               "modes": modes, "rss": rss, "checks": checks, "wall_s": time.perf_counter() - t_start}
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results"
    plot(modes, b32["median"], out / "serve.png")
    write("serve", payload, markdown(payload), out)
    return 0


def plot(modes: dict, b32: float, path: Path) -> None:
    from resnetlab.utils.plot import plt, save_figure

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for i, (mode, rows) in enumerate(modes.items()):
        c = [r["clients"] for r in rows]
        a.plot(c, [r["img_s"] for r in rows], "o-", color=f"C{i}", label=f"served, {mode}")
        b.plot(c, [r["p50"] for r in rows], "o-", color=f"C{i}", label=f"p50, {mode}")
        b.plot(c, [r["p99"] for r in rows], "s--", color=f"C{i}", label=f"p99, {mode}")
    a.axhline(b32, color="k", lw=1, ls=":", label="offline Predictor, batch 32")
    a.axhline(0.8 * b32, color="grey", lw=1, ls="--", label="0.8x offline (target at 32 clients)")
    for ax, ylabel in ((a, "images/s"), (b, "latency, ms (log)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(CLIENTS, [str(c) for c in CLIENTS])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(fontsize=8, frameon=False)
    b.set_yscale("log")
    a.set_ylim(bottom=0)
    fig.suptitle("resnetlab serve: ResNet-18 224 px FP32 (OpenVINO), loopback, 2 cores shared with the clients",
                 fontsize=10)
    save_figure(fig, path)


def markdown(p: dict) -> str:
    b1, b32 = p["offline"]["b1_ms"], p["offline"]["b32_img_s"]
    lines = ["# Serving under load: `resnetlab serve`, ResNet-18 224 px FP32", "", header_md(p["env"]), "",
             f"Offline Predictor (same artefact, preprocessed tensors, {b1['n']} rounds before and after the server "
             f"phases): batch-1 {fmt_spread(b1, digits=2)} ms, batch-32 {fmt_spread(b32)} img/s.", "",
             "| mode | clients | requests | errors | img/s | x offline b32 | p50 ms | p90 ms | p99 ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mode, rows in p["modes"].items():
        for r in rows:
            lines.append(f"| {mode} | {r['clients']} | {r['requests']} | {r['errors']} | {r['img_s']:.1f} | "
                         f"{r['img_s'] / b32['median']:.2f} | {r['p50']:.1f} | {r['p90']:.1f} | {r['p99']:.1f} |")
    rss = p["rss"]
    lines += ["", f"Memory: server RSS {rss['before_mib']:.0f} MiB -> {rss['after_mib']:.0f} MiB over "
                  f"{rss['load']['requests']:,} requests (32 clients, {rss['load']['img_s']:.1f} img/s, "
                  f"{rss['load']['errors']} errors).", "", "| rule | value | bound | verdict |", "|---|---|---|---|"]
    lines += [f"| {c['rule']} | {c['value']:.3g} | {c['bound']} | {'pass' if c['pass'] else 'FAIL'} |"
              for c in p["checks"]]
    lines += ["", "One load phase per row (20 s or 4,000 requests); the clients (asyncio + httpx) share the 2 "
                  "cores with the server, so served numbers include the cost of generating the load.", "",
              "![throughput and latency](serve.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
