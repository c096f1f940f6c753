import io

import pytest
from tqdm import tqdm

from resnetlab.utils import Progress, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_format_duration():
    assert format_duration(0) == "0:00"
    assert format_duration(5.9) == "0:05"
    assert format_duration(62) == "1:02"
    assert format_duration(3723) == "1:02:03"
    assert format_duration(2 * 86400 + 3723) == "2d 1:02:03"
    assert format_duration(float("inf")) == "?" and format_duration(float("nan")) == "?"
    with pytest.raises(ValueError, match="got -1"):
        format_duration(-1)


def test_plain_lines_every_log_every_s_and_at_the_end():
    clock, out = FakeClock(), io.StringIO()
    with Progress(391, "train", stream=out, log_every_s=10, time_fn=clock) as p:
        for _ in range(391):
            clock.t += 0.16  # 62.56 s for 391 steps
            p.update(1, loss=0.5234, acc=0.81, img_s=190.3)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 7  # at 10, 20, ..., 60 s and once at the end
    assert lines[0] == "train  63/391 (16%)  elapsed 0:10  eta 0:52  6.25it/s  loss=0.523 acc=81.0% img/s=190"
    assert lines[-1] == "train  391/391 (100%)  elapsed 1:02  6.25it/s  loss=0.523 acc=81.0% img/s=190"


def test_eta_from_the_average_rate():
    clock, out = FakeClock(), io.StringIO()
    p = Progress(100, "", stream=out, log_every_s=0, time_fn=clock)
    clock.t += 30
    p.update(25)  # 25 in 30 s: the 75 left take 90 s
    assert out.getvalue() == "25/100 (25%)  elapsed 0:30  eta 1:30  1.2s/it\n"  # under 1 it/s: seconds per it
    tty = FakeTTY()
    bar = Progress(100, "", stream=tty, time_fn=clock)
    clock.t += 30
    bar.update(25)  # tqdm's bar on our clock, from the average rate too
    assert "[00:30<01:30,  1.20s/it]" in _frames(tty)[-1]


def _frames(out: io.StringIO) -> list[str]:
    return [f for f in out.getvalue().split("\r") if f.strip()]


def test_tty_bar_is_tqdm_redrawn_at_most_ten_times_a_second():
    clock, out = FakeClock(), FakeTTY()
    p = Progress(391, "train", stream=out, time_fn=clock)
    assert isinstance(p._bar, tqdm)
    for _ in range(100):
        clock.t += 0.01  # 100 updates in 1 s
        p.update(1)
    assert 10 <= len(_frames(out)) <= 12  # the first frame, then one per 0.1 s
    assert "\n" not in out.getvalue()
    p.close()
    assert out.getvalue().endswith("\n")


def test_tty_bar_shows_our_postfix_and_the_last_step():
    clock, out = FakeClock(), FakeTTY()
    p = Progress(391, "train", stream=out, time_fn=clock)
    clock.t += 62.0
    p.update(176, loss=0.52, acc=0.81, img_s=190.3)
    last = _frames(out)[-1]
    assert last.startswith("train:  45%|")
    assert last.endswith("| 176/391 [01:02<01:15,  2.84it/s, loss=0.52 acc=81.0% img/s=190]")
    clock.t += 0.01  # within min_interval_s of the last frame, but the last step always draws
    p.update(215)
    assert "100%|" in _frames(out)[-1] and "391/391" in _frames(out)[-1]
    p.close()
    assert out.getvalue().endswith("]\n") and p.n == 391


def test_tty_bytes_are_scaled():
    clock, out = FakeClock(), FakeTTY()
    with Progress(1 << 20, "get", stream=out, unit="B", time_fn=clock) as p:
        clock.t += 1
        p.update(1 << 19)
    assert "512k/1.00M" in _frames(out)[-1]


def test_unknown_total_and_percent_keys():
    clock, out = FakeClock(), io.StringIO()
    p = Progress(None, "eval", stream=out, unit="img", log_every_s=5, time_fn=clock)
    clock.t += 5
    p.update(640, top1=0.5, val_acc=0.25, top5=1, lr=0.1, loss=12.345, epoch=3)
    assert out.getvalue() == (
        "eval  640 img  elapsed 0:05  128img/s  top1=50.0% val_acc=25.0% top5=1 lr=0.1 loss=12.3 epoch=3\n"
    )
    tty = FakeTTY()
    bar = Progress(None, "eval", stream=tty, unit="img", time_fn=clock)
    clock.t += 5
    bar.update(640, top1=0.5, val_acc=0.25, top5=1, lr=0.1, loss=12.345, epoch=3)
    bar.close()
    assert _frames(tty)[-1] == (
        "eval: 640img [00:05, 128.00img/s, top1=50.0% val_acc=25.0% top5=1 lr=0.1 loss=12.3 epoch=3]\n"
    )


def test_disabled_writes_nothing_and_close_is_idempotent():
    for out in (io.StringIO(), FakeTTY()):
        with Progress(10, stream=out, enabled=False, time_fn=FakeClock()) as p:
            p.update(10)
            assert p._bar is None
        assert out.getvalue() == ""
    out2, clock = io.StringIO(), FakeClock()
    p = Progress(3, "t", stream=out2, time_fn=clock)
    p.close()
    p.close()
    assert out2.getvalue().count("\n") == 1


def test_write_keeps_the_bar_below():
    clock, out = FakeClock(), FakeTTY()
    p = Progress(10, "t", stream=out, time_fn=clock)
    p.write("epoch 1 done")
    before, after = out.getvalue().split("epoch 1 done\n")
    assert before.endswith("\r") and after.startswith("\rt:   0%|") and after.endswith("0/10 [00:00<?, ?it/s]")
    p.close()
    plain = io.StringIO()
    Progress(10, "t", stream=plain, time_fn=clock).write("epoch 2 done")
    assert plain.getvalue() == "epoch 2 done\n"


def test_bad_arguments():
    with pytest.raises(ValueError, match="total must be a non-negative int or None, got -5"):
        Progress(-5, stream=io.StringIO())
    p = Progress(5, stream=io.StringIO())
    with pytest.raises(ValueError, match="n >= 0, got -1"):
        p.update(-1)


def test_stream_without_isatty_is_plain():
    class Sink:
        def __init__(self):
            self.parts = []

        def write(self, s):
            self.parts.append(s)

        def flush(self):
            pass

    sink, clock = Sink(), FakeClock()
    with Progress(2, "s", stream=sink, time_fn=clock) as p:
        p.update(2)
    assert not p.tty and "".join(sink.parts) == "s  2/2 (100%)  elapsed 0:00  ?it/s\n"
