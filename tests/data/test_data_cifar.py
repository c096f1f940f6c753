"""CIFAR-10 python format: layout and labels, the restricted unpickler, the verified download."""

from __future__ import annotations

import hashlib
import http.server
import os
import pickle
import threading
import time
import urllib.request

import numpy as np
import pytest
from data_helpers import cifar_batches, cifar_pickle, write_cifar_archive, write_cifar_folder

import resnetlab.data.cifar as cifar_mod
import resnetlab.utils.download as download_mod
from resnetlab.data import ArrayDataset, download_cifar10, open_dataset

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _expected(batches, names):
    data = np.concatenate([batches[n][b"data"] for n in names])
    labels = [v for n in names for v in batches[n][b"labels"]]
    return data, labels


def _check(ds, batches, names):
    data, labels = _expected(batches, names)
    assert isinstance(ds, ArrayDataset) and ds.classes == CLASSES
    assert ds.images.shape == (len(data), 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.targets.tolist() == labels
    # the official row layout: 1024 red values, then green, then blue, each row-major
    i, y, x = len(data) - 1, 5, 17
    for c in range(3):
        assert ds.images[i, y, x, c] == data[i, c * 1024 + y * 32 + x]


@pytest.mark.parametrize("form", ["folder", "archive", "parent_of_folder", "parent_of_archive"])
def test_train_and_test_splits_in_every_form(tmp_path, form):
    batches = cifar_batches()
    if form in ("folder", "parent_of_folder"):
        src = write_cifar_folder(tmp_path / "cifar-10-batches-py", batches)
    else:
        src = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", batches)
    if form.startswith("parent"):
        src = tmp_path
    _check(open_dataset(src, "train"), batches, [f"data_batch_{k}" for k in range(1, 6)])
    _check(open_dataset(src, "test"), batches, ["test_batch"])
    _check(open_dataset(src, "val"), batches, ["test_batch"])


def test_val_split_carves_the_training_batches(tmp_path):
    src = write_cifar_folder(tmp_path / "cifar-10-batches-py", cifar_batches(n_train=10))
    train = open_dataset(src, "train", val_split=0.2, seed=3)
    val = open_dataset(src, "val", val_split=0.2, seed=3)
    assert len(train) + len(val) == 50 and len(val) == 10  # 5 per class, 1 of each to val
    rows = {bytes(img) for img in train.images} | {bytes(img) for img in val.images}
    assert len(rows) == 50
    assert open_dataset(src, "val", val_split=0.2, seed=3).targets.tolist() == val.targets.tolist()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_with_a_foreign_global_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    assert pickle.loads(pickle.dumps(_Payload(tmp_path / "proof"))) == 0 and (tmp_path / "proof").exists()
    batches = cifar_batches()
    src = write_cifar_folder(tmp_path / "cifar-10-batches-py", batches)
    (src / "test_batch").write_bytes(cifar_pickle({b"data": _Payload(marker), b"labels": [0]}))
    with pytest.raises(ValueError, match=r"test_batch: refusing to load the global posix\.system"):
        open_dataset(src, "test")
    assert not marker.exists()
    # numpy's own globals are allowed, but only the array-reconstruction ones
    (src / "test_batch").write_bytes(cifar_pickle({b"data": np.load, b"labels": [0]}))
    with pytest.raises(ValueError, match=r"refusing to load the global numpy.*load"):
        open_dataset(src, "test")


def test_malformed_batches_are_named(tmp_path):
    src = write_cifar_folder(tmp_path / "cifar-10-batches-py", cifar_batches())
    (src / "test_batch").write_bytes(cifar_pickle({b"pixels": np.zeros((1, 3072), np.uint8)}))
    with pytest.raises(ValueError, match=r"test_batch: expected keys 'data' and 'labels', found \['pixels'\]"):
        open_dataset(src, "test")
    (src / "test_batch").write_bytes(b"\x80\x03garbage")
    with pytest.raises(ValueError, match="test_batch: not a readable CIFAR-10 batch"):
        open_dataset(src, "test")
    (src / "data_batch_3").unlink()
    with pytest.raises(ValueError, match=r"missing the CIFAR-10 file\(s\) \['data_batch_3'\]"):
        open_dataset(src, "train")


def test_download_verifies_md5_and_is_atomic(tmp_path):
    archive = write_cifar_archive(tmp_path / "src" / "cifar-10-python.tar.gz", cifar_batches())
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    url = archive.as_uri()  # file://, which urllib reads like http
    bad_root = tmp_path / "bad"
    with pytest.raises(ValueError, match=f"md5 mismatch for .*expected 0+, got {md5}"):
        download_cifar10(bad_root, url=url, md5="0" * 32, progress=False)
    assert [p.name for p in bad_root.iterdir()] == [".locks"]  # nothing but the (empty) lock file
    got = download_cifar10(tmp_path / "good", url=url, md5=md5, progress=False)
    assert got == tmp_path / "good" / "cifar-10-python.tar.gz" and got.read_bytes() == archive.read_bytes()
    assert sorted(os.listdir(tmp_path / "good")) == [".locks", "cifar-10-python.tar.gz"]
    assert len(open_dataset(got, "test")) == 6
    archive.unlink()  # an archive already in place with the right md5 is not fetched again
    assert download_cifar10(tmp_path / "good", url=url, md5=md5, progress=False) == got


class _Server:
    """A local HTTP server answering request i with plan[i] (then "ok"): bounded, stopped on exit."""

    def __init__(self, body: bytes, plan: list[str]) -> None:
        self.body, self.plan, self.seen = body, list(plan), []
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                what = outer.plan[len(outer.seen)] if len(outer.seen) < len(outer.plan) else "ok"
                outer.seen.append(what)
                if what == "stall_headers":  # say nothing until the client has given up
                    outer.release.wait(5)
                    return
                if what.isdigit():
                    self.send_error(int(what))
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                if what == "stall_body":  # half the body, then silence
                    self.wfile.write(outer.body[: len(outer.body) // 2])
                    self.wfile.flush()
                    outer.release.wait(5)
                    return
                if what == "cut":  # half the body, then the connection ends
                    self.wfile.write(outer.body[: len(outer.body) // 2])
                    return
                self.wfile.write(outer.body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cifar-10-python.tar.gz"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_times_out_and_retries_with_backoff(tmp_path, monkeypatch):
    archive = write_cifar_archive(tmp_path / "src" / "cifar-10-python.tar.gz", cifar_batches())
    body, waits = archive.read_bytes(), []
    monkeypatch.setattr(download_mod.time, "sleep", waits.append)  # the one download helper CIFAR uses
    with _Server(body, ["stall_headers", "stall_body", "cut", "503"]) as server:
        t0 = time.monotonic()
        got = download_cifar10(tmp_path / "dl", url=server.url, md5=hashlib.md5(body).hexdigest(), progress=False,
                               timeout=0.3, retries=4, backoff_s=0.5)
        assert time.monotonic() - t0 < 4  # two stalls of 0.3 s each, not a hang
    assert server.seen == ["stall_headers", "stall_body", "cut", "503", "ok"]
    assert waits == [0.5, 1.0, 2.0, 4.0]  # doubling backoff between attempts
    assert got.read_bytes() == body and sorted(os.listdir(tmp_path / "dl")) == [".locks", "cifar-10-python.tar.gz"]


def test_download_gives_up_naming_the_url(tmp_path, monkeypatch):
    monkeypatch.setattr(download_mod.time, "sleep", lambda s: None)
    with _Server(b"x", ["404"]) as server:
        with pytest.raises(OSError, match=r"cannot download http://127.*HTTPError.*404.*1 attempt"):
            download_cifar10(tmp_path / "dl", url=server.url, md5="0" * 32, progress=False, retries=3)
        assert server.seen == ["404"]  # a 404 is not retried
    with _Server(b"x", ["500"] * 10) as server:
        with pytest.raises(OSError, match=r"500.*3 attempt"):
            download_cifar10(tmp_path / "dl", url=server.url, md5="0" * 32, progress=False, retries=2)
        assert server.seen == ["500"] * 3
    assert sorted(os.listdir(tmp_path / "dl")) == [".locks"]


def test_concurrent_downloads_fetch_once(tmp_path, monkeypatch):
    archive = write_cifar_archive(tmp_path / "src" / "cifar-10-python.tar.gz", cifar_batches())
    md5, fetched = hashlib.md5(archive.read_bytes()).hexdigest(), []
    real = urllib.request.urlopen

    def slow_urlopen(url, *args, **kwargs):
        fetched.append(url)
        time.sleep(0.3)
        return real(url, *args, **kwargs)

    monkeypatch.setattr(cifar_mod.urllib.request, "urlopen", slow_urlopen)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        download_cifar10(tmp_path / "shared", url=archive.as_uri(), md5=md5, progress=False))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(fetched) == 1 and results == [tmp_path / "shared" / "cifar-10-python.tar.gz"] * 2
