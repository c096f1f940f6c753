"""`resnetlab serve`: answers equal the Predictor's, batching coalesces, limits answer 4xx (never 500), the
server stays up under hostile requests, shuts down gracefully, and imports no training code."""

import base64
import concurrent.futures as cf
import io
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import httpx
import numpy as np
import pytest
from PIL import Image

from extras_helpers import need
from serve_helpers import (first_image, free_port, png_bomb, png_header, running, slow_request, wait_ready,
                           zip_as_jpg)
from train_helpers import tiny_config, write_tree

need("fastapi", "serve")
need("uvicorn", "serve")
need("python_multipart", "serve")
need("prometheus_client", "serve")

from resnetlab import Predictor  # noqa: E402
from resnetlab.serve import ServeConfig  # noqa: E402

ZOO = __import__("resnetlab").list_models()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from resnetlab.train.engine import fit

    root = tmp_path_factory.mktemp("serve")
    tree = write_tree(root / "colours", train=24, test=8, val=4, size=16)
    fit(tiny_config(tree, root / "run", epochs=1))
    return root


@pytest.fixture(scope="module")
def url(run):
    cfg = ServeConfig(checkpoint=str(run / "run"), backend="torch", max_body_mb=1, max_files=4, max_pixels=10**6,
                      timeout_s=2, max_wait_ms=2, threads=1)
    with running(cfg) as base:
        yield base


def _png(path) -> bytes:
    return path.read_bytes()


def test_answers_equal_the_predictors_for_multipart_and_raw_bodies(run, url):
    images = sorted((run / "colours" / "test").rglob("*.png"))[:3]
    want = Predictor(str(run / "run"), backend="torch").predict([str(p) for p in images], topk=2)
    r = httpx.post(url + "/v1/predict?topk=2", files=[("file", (p.name, _png(p), "image/png")) for p in images])
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p["filename"] for p in body["predictions"]] == [p.name for p in images]
    for pred, expected in zip(body["predictions"], want):
        assert [t["class"] for t in pred["top"]] == [c for c, _ in expected]
        assert np.allclose([t["prob"] for t in pred["top"]], [p for _, p in expected], atol=1e-6)
        assert pred["decision"]["class"] == expected[0][0]
    assert body["model"]["digest"] == Predictor(str(run / "run"), backend="torch").digest
    assert body["backend"] == "torch" and set(body["timing_ms"]) == {"decode", "queue", "inference", "total"}
    raw = httpx.post(url + "/v1/predict", content=_png(images[0]), headers={"content-type": "image/png"}).json()
    assert raw["predictions"][0]["top"][0] == body["predictions"][0]["top"][0]
    assert len(raw["predictions"][0]["top"]) == 3  # all classes: the tiny model has three (default topk 5)


def test_model_description_docs_and_health(run, url):
    info = httpx.get(url + "/v1/model").json()
    assert info["classes"] == ["blue", "green", "red"] and info["input"] == {"channels": 3, "size": 16}
    assert info["explain"] is True and info["limits"]["max_files"] == 4 and info["backend"] == "torch"
    assert httpx.get(url + "/healthz").json() == {"status": "alive"}
    assert "/v1/predict" in httpx.get(url + "/openapi.json").json()["paths"]
    assert httpx.get(url + "/docs").status_code == 200


BAD = [  # (what, request kwargs, status, error type)
    ("text file", dict(files=[("file", ("notes.txt", b"just words", "text/plain"))]), 415, "not_an_image"),
    ("zip renamed .jpg", dict(files=[("file", ("photo.jpg", zip_as_jpg(), "image/jpeg"))]), 415, "not_an_image"),
    ("wrong content type", dict(content=b'{"a": 1}', headers={"content-type": "application/json"}), 415,
     "unsupported_media_type"),
    ("empty body", dict(content=b"", headers={"content-type": "image/png"}), 422, "empty"),
    ("form without a file", dict(data={"a": "b"}, files=[("x", ("", b"", "text/plain"))]), 422, None),
    ("huge PNG header", dict(files=[("file", ("big.png", png_header(100_000, 100_000), "image/png"))]), 413,
     "too_many_pixels"),
    ("too many files", dict(files=[("file", (f"{i}.png", b"x", "image/png")) for i in range(5)]), 413,
     "too_many_files"),
    ("declared body over the limit", dict(content=b"x" * (2 << 20), headers={"content-type": "image/png"}), 413,
     "too_large"),
    ("streamed body over the limit", dict(content=iter([b"x" * 65536] * 40), headers={"content-type": "image/png"}),
     413, "too_large"),
    ("bad topk", dict(params={"topk": "zero"}, content=b"x", headers={"content-type": "image/png"}), 422,
     "invalid_parameter"),
]


@pytest.mark.parametrize("what,kwargs,status,kind", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_their_4xx_with_a_named_error(url, what, kwargs, status, kind):
    r = httpx.post(url + "/v1/predict", timeout=30, **kwargs)
    assert r.status_code == status, (what, r.text)
    err = r.json()["error"]
    assert err["status"] == status and err["message"]
    assert kind is None or err["type"] == kind, err


def test_truncated_image_and_a_decompression_bomb(run, url):
    good = _png(first_image(run / "colours" / "test"))
    r = httpx.post(url + "/v1/predict", files=[("file", ("cut.png", good[: len(good) // 2], "image/png"))])
    assert r.status_code == 422 and r.json()["error"]["type"] == "bad_image" and "cut.png" in r.text
    bomb = png_bomb(2000)  # 4 M pixels in a few KB: over this server's 1 M pixel limit, refused before decoding
    assert len(bomb) < 50_000
    r = httpx.post(url + "/v1/predict", files=[("file", ("bomb.png", bomb, "image/png"))])
    assert r.status_code == 413 and "2000x2000" in r.json()["error"]["message"]


def test_wrong_route_and_method(url):
    assert httpx.get(url + "/v1/nothing").json()["error"]["status"] == 404
    r = httpx.get(url + "/v1/predict")
    assert r.status_code == 405 and r.json()["error"]["type"] == "method_not_allowed"


def test_a_slow_client_gets_408_and_others_are_served_meanwhile(run, url):
    port = int(url.rsplit(":", 1)[1])
    good = _png(first_image(run / "colours" / "test"))
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("reply", slow_request(port, "/v1/predict", good, 0.5)))
    t.start()
    time.sleep(0.3)
    assert httpx.post(url + "/v1/predict", content=good, headers={"content-type": "image/png"}).status_code == 200
    t.join(30)
    assert box["reply"].startswith(b"HTTP/1.1 408"), box["reply"][:200]
    assert b'"timeout"' in box["reply"]


def _hostile_kinds(good: bytes) -> dict:
    """Each bad kind: (a function giving fresh request kwargs, its status)."""
    many = [("file", (f"{i}.png", b"x", "image/png")) for i in range(10_000)]
    kinds = {what: ((lambda kw=kw: kw), status) for what, kw, status, _ in BAD if not hasattr(kw.get("content"),
                                                                                              "__next__")}
    kinds.update({
        "streamed body over the limit": (lambda: dict(content=iter([b"x" * 65536] * 20),
                                                      headers={"content-type": "image/png"}), 413),
        "10,000-file multipart": (lambda: dict(files=many), 413),
        "truncated PNG": (lambda: dict(files=[("file", ("cut.png", good[: len(good) // 2], "image/png"))]), 422),
        "decompression bomb": (lambda: dict(files=[("file", ("bomb.png", BOMB, "image/png"))]), 413),
    })
    return kinds


BOMB = png_bomb(2000)


def test_hostile_mix_every_bad_request_refused_every_good_one_right_health_throughout(run, url):
    good_path = first_image(run / "colours" / "test")
    good, want = _png(good_path), Predictor(str(run / "run"), backend="torch").predict([str(good_path)], topk=1)[0]
    kinds = _hostile_kinds(good)
    per_kind = -(-200 // len(kinds))  # at least 200 bad requests, every kind as often
    jobs = [("bad", what) for what in kinds for _ in range(per_kind)] + [("good", None)] * 60
    order = np.random.default_rng(0).permutation(len(jobs))
    port, health_fail, slow, stop = int(url.rsplit(":", 1)[1]), [], [], threading.Event()

    def watch():
        while not stop.is_set():
            try:
                if httpx.get(url + "/healthz", timeout=5).status_code != 200:
                    health_fail.append("status")
            except httpx.HTTPError as e:
                health_fail.append(repr(e))
            time.sleep(0.05)

    def slow_client():  # one byte a second, the server's timeout is 2 s
        slow.append(slow_request(port, "/v1/predict", good, 1.0)[:12])

    def one(i):
        kind, what = jobs[i]
        with httpx.Client(timeout=60) as c:
            if kind == "good":
                r = c.post(url + "/v1/predict?topk=1", files=[("file", ("g.png", good, "image/png"))])
                top = r.json()["predictions"][0]["top"][0] if r.status_code == 200 else None
                return r.status_code == 200 and top["class"] == want[0][0] and abs(top["prob"] - want[0][1]) < 1e-6
            make, status = kinds[what]
            r = c.post(url + "/v1/predict", **make())
            return r.status_code == status and r.json()["error"]["status"] == status or (what, r.status_code, r.text)

    threads = [threading.Thread(target=watch)] + [threading.Thread(target=slow_client) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        with cf.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, order))
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    wrong = [r for r in results if r is not True]
    assert wrong == [], f"{len(wrong)} of {len(jobs)} answered wrongly: {wrong[:5]}"
    assert len(jobs) - 60 >= 200 and health_fail == []
    assert slow == [b"HTTP/1.1 408"] * 3
    metrics = httpx.get(url + "/metrics").text
    assert 'resnetlab_requests_total{route="/v1/predict",status="500"}' not in metrics
    for status in (408, 413, 415, 422):
        assert f'resnetlab_requests_total{{route="/v1/predict",status="{status}"}}' in metrics


def test_concurrent_requests_are_batched_and_the_queue_is_bounded(run):
    good = _png(first_image(run / "colours" / "test"))
    cfg = ServeConfig(checkpoint=str(run / "run"), backend="torch", max_wait_ms=300, max_batch=8, max_queue=6,
                      threads=1)
    with running(cfg) as base:
        def post(_):
            return httpx.post(base + "/v1/predict", content=good, headers={"content-type": "image/png"},
                              timeout=30).json()["batch_size"]
        with cf.ThreadPoolExecutor(6) as pool:
            sizes = list(pool.map(post, range(6)))
        assert max(sizes) > 1, sizes  # requests within 300 ms of each other shared a forward pass
        r = httpx.post(base + "/v1/predict", files=[("file", (f"{i}.png", good, "image/png")) for i in range(7)],
                       timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["error"]["type"] == "busy"
        text = httpx.get(base + "/metrics").text
        assert "resnetlab_images_total 6.0" in text and "resnetlab_queue_depth 0.0" in text
    with running(replace(cfg, max_batch=1)) as base:
        with cf.ThreadPoolExecutor(4) as pool:
            assert set(pool.map(post, range(4))) == {1}


def test_explain_returns_the_overlay_of_the_explained_class(run, url):
    from resnetlab import explain

    path = first_image(run / "colours" / "test")
    r = httpx.post(url + "/v1/explain?format=json", files=[("file", (path.name, _png(path), "image/png"))])
    assert r.status_code == 200, r.text
    body = r.json()
    want = explain(str(run / "run"), [str(path)])
    assert body["target"]["class"] == want.classes[int(want.targets[0])] and body["layer"] == want.layer
    png = Image.open(io.BytesIO(base64.b64decode(body["overlay_png_base64"])))
    assert png.format == "PNG" and min(png.size) >= 224
    r = httpx.post(url + "/v1/explain", files=[("file", (path.name, _png(path), "image/png"))],
                   params={"method": "nope"})
    assert r.status_code == 422 and "gradcam" in r.json()["error"]["message"]
    r = httpx.post(url + "/v1/explain", files=[("file", (path.name, _png(path), "image/png"))])
    assert r.headers["content-type"] == "image/png"


def test_an_artefact_is_served_without_explanations(run, tmp_path):
    need("onnxruntime", "onnx")
    from resnetlab.deploy.api import export_checkpoint

    onnx = tmp_path / "model.onnx"
    export_checkpoint(str(run / "run"), "onnx", onnx, dynamic_batch=True)
    path = first_image(run / "colours" / "test")
    with running(ServeConfig(checkpoint=str(onnx), threads=1)) as base:
        info = httpx.get(base + "/v1/model").json()
        assert info["backend"] == "onnxruntime" and info["explain"] is False
        r = httpx.post(base + "/v1/explain", files=[("file", ("a.png", _png(path), "image/png"))])
        assert r.status_code == 404 and "PyTorch checkpoint" in r.json()["error"]["message"]
        got = httpx.post(base + "/v1/predict", content=_png(path), headers={"content-type": "image/png"}).json()
    want = Predictor(str(onnx)).predict([str(path)], topk=3)[0]
    assert [t["class"] for t in got["predictions"][0]["top"]] == [c for c, _ in want]


def test_a_model_that_cannot_load_is_reported_by_readyz(run):
    from resnetlab.serve import create_app
    from fastapi.testclient import TestClient

    app = create_app(ServeConfig(checkpoint=str(run / "run"), precision="int8-artefact"))
    with TestClient(app) as c:
        for _ in range(100):
            r = c.get("/readyz")
            if "int8" in r.text:
                break
            time.sleep(0.1)
        assert r.status_code == 503 and "needs an int8 artefact" in r.json()["error"]["message"]
        assert c.get("/healthz").status_code == 200
        r = c.post("/v1/predict", content=b"x", headers={"content-type": "image/png"})
        assert r.status_code == 503 and r.json()["error"]["type"] == "not_ready"


def test_config_and_cli_refuse_bad_values(run):
    with pytest.raises(ValueError, match="max_batch must be positive, got 0"):
        ServeConfig(checkpoint="x", max_batch=0)
    with pytest.raises(ValueError, match="precision must be"):
        ServeConfig(checkpoint="x", precision="int4")
    out = subprocess.run([sys.executable, "-m", "resnetlab", "serve", "--checkpoint", "x", "--port", "0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "port must be 1..65535, got 0" in out.stderr


def test_the_server_process_finishes_requests_in_flight_on_sigterm(run):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "resnetlab", "serve", "--checkpoint", str(run / "run"), "--port",
                             str(port), "--backend", "torch", "--max-wait-ms", "1500", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_ready(f"http://127.0.0.1:{port}", 120)
        good = _png(first_image(run / "colours" / "test"))
        with cf.ThreadPoolExecutor(1) as pool:
            fut = pool.submit(httpx.post, f"http://127.0.0.1:{port}/v1/predict", content=good,
                              headers={"content-type": "image/png"}, timeout=30)
            time.sleep(0.5)  # the request waits in the batcher (1.5 s) when the signal comes
            proc.send_signal(signal.SIGTERM)
            r = fut.result()
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert r.status_code == 200 and r.json()["predictions"][0]["top"]
    # uvicorn finishes, then re-raises the signal it caught (exit status -SIGTERM), as a supervisor expects
    assert proc.returncode in (0, -signal.SIGTERM) and "Finished server process" in out, out


def test_a_loaded_server_holds_no_training_code(run):
    code = ("import sys\n"
            "from resnetlab.serve import ServeConfig, create_app\n"
            "from resnetlab.serve.model import ServedModel\n"
            f"cfg = ServeConfig(checkpoint={str(run / 'run')!r}, backend='torch')\n"
            "m = ServedModel.load(cfg); m.warm_up(2); create_app(cfg, m)\n"
            "print(sorted(k for k in sys.modules if k.startswith(('resnetlab.train', 'resnetlab.compress'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_config_from_the_environment_for_worker_processes():
    from resnetlab.serve import config_from_env

    cfg = config_from_env({"RESNETLAB_SERVE_CHECKPOINT": "run", "RESNETLAB_SERVE_MAX_BATCH": "16",
                           "RESNETLAB_SERVE_MAX_WAIT_MS": "2.5", "RESNETLAB_SERVE_EXPLAIN": "false"})
    assert (cfg.checkpoint, cfg.max_batch, cfg.max_wait_ms, cfg.explain) == ("run", 16, 2.5, False)
    with pytest.raises(ValueError, match="RESNETLAB_SERVE_MAX_BATCH='many' is not a valid int"):
        config_from_env({"RESNETLAB_SERVE_CHECKPOINT": "run", "RESNETLAB_SERVE_MAX_BATCH": "many"})
    with pytest.raises(ValueError, match="set RESNETLAB_SERVE_CHECKPOINT"):
        config_from_env({})


@pytest.mark.parametrize("name", ZOO)
def test_every_model_of_the_zoo_is_served_by_the_same_code(name):
    import torch
    from fastapi.testclient import TestClient

    import resnetlab
    from model_helpers import small_input_size
    from resnetlab.serve import create_app
    from resnetlab.serve.model import ServedModel

    torch.manual_seed(0)
    model = resnetlab.create_model(name, num_classes=5).eval()
    size = small_input_size(model)
    predictor = Predictor(model, backend="torch", image_size=size, classes=list("abcde"))
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size + 7, size + 3, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    want = predictor.predict([img], topk=5)[0]
    app = create_app(ServeConfig(checkpoint=name, max_batch=2, threads=1), ServedModel(predictor))
    with TestClient(app) as c:
        for _ in range(300):
            if c.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        r = c.post("/v1/predict", content=buf.getvalue(), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    got = r.json()["predictions"][0]["top"]
    assert [t["class"] for t in got] == [c for c, _ in want]
    assert np.allclose([t["prob"] for t in got], [p for _, p in want], atol=1e-5)


def test_the_stored_operating_point_decides_and_is_reported():
    import torch

    import resnetlab
    from resnetlab.serve.model import ServedModel

    torch.manual_seed(0)
    predictor = Predictor(resnetlab.create_model("resnet20", num_classes=2), backend="torch", classes=["neg", "pos"])
    served = ServedModel(predictor)
    probs = np.array([0.7, 0.3], dtype=np.float32)
    assert served.describe(probs, 2)["decision"]["class"] == "neg" and served.describe(probs, 2)["threshold"] is None
    predictor.meta.extra["operating_point"] = {"positive_index": 1, "threshold": 0.25}  # as a calibrated run stores
    answer = served.describe(probs, 2)
    assert answer["decision"] == {"class": "pos", "prob": pytest.approx(0.3)} and answer["threshold"] == 0.25
    assert answer["top"][0]["class"] == "neg"  # the ranking stays the probabilities'


def test_the_batcher_waits_only_while_more_images_are_coming():
    import asyncio

    from resnetlab.serve.batching import Batcher

    async def scenario():
        b = Batcher(lambda x: x.reshape(len(x), -1)[:, :2] * 2, max_batch=8, max_wait_ms=400, max_queue=16)
        await b.start()
        t = time.perf_counter()
        (alone,) = await b.submit([np.ones((1, 2, 2), np.float32)])
        lone_s = time.perf_counter() - t
        b.incoming(1)  # a second request is decoding: the first waits for it (up to 400 ms)

        async def late():
            await asyncio.sleep(0.1)
            b.incoming(-1)
            return await b.submit([np.zeros((1, 2, 2), np.float32)])

        first, second = await asyncio.gather(b.submit([np.ones((1, 2, 2), np.float32)]), late())
        await b.stop()
        return alone, lone_s, first[0], second[0]

    alone, lone_s, first, second = asyncio.run(scenario())
    assert lone_s < 0.2 and alone[1].batch_size == 1 and np.allclose(alone[0], [2, 2])
    assert first[1].batch_size == 2 and second[1].batch_size == 2 and np.allclose(second[0], [0, 0])


def test_an_int8_artefact_is_served_as_int8(run, tmp_path):
    need("openvino", "openvino")
    need("nncf", "openvino")
    from resnetlab.deploy.api import quantize_checkpoint

    report = quantize_checkpoint(str(run / "run"), "openvino", tmp_path / "int8.xml", calib_images=16)
    artefact = getattr(report, "path", None) or tmp_path / "int8.xml"
    path = first_image(run / "colours" / "test")
    with running(ServeConfig(checkpoint=str(artefact), precision="int8-artefact", threads=1)) as base:
        info = httpx.get(base + "/v1/model").json()
        got = httpx.post(base + "/v1/predict", content=_png(path), headers={"content-type": "image/png"}).json()
    assert info["precision"] == "int8" and info["backend"] == "openvino" and got["precision"] == "int8"
    want = Predictor(str(artefact)).predict([str(path)], topk=3)[0]
    assert [t["class"] for t in got["predictions"][0]["top"]] == [c for c, _ in want]


def test_the_cli_leaves_sigpipe_alone():
    """`main()` once set SIGPIPE to its default action: in-process callers (this test suite) and `resnetlab serve`
    were then killed by the first write to a socket whose client had hung up."""
    import signal as sig

    from resnetlab.cli import main

    before = sig.getsignal(sig.SIGPIPE)
    assert main(["models", "--filter", "resnet18"]) == 0
    assert sig.getsignal(sig.SIGPIPE) == before == sig.SIG_IGN
