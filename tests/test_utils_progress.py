import io

import pytest

from resnetlab.utils import Progress, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # lines are cut to the terminal width


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
    assert "[00:30<01:30, 1.2s/it]" in p.bar_line()


def test_tty_bar_redraws_at_most_ten_times_a_second():
    clock, out = FakeClock(), FakeTTY()
    p = Progress(391, "train", stream=out, time_fn=clock)
    for _ in range(100):
        clock.t += 0.01  # 100 updates in 1 s
        p.update(1)
    frames = out.getvalue().split("\r")[1:]
    assert 10 <= len(frames) <= 12  # the first frame, then one per 0.1 s
    assert "\n" not in out.getvalue()
    p.close()
    assert out.getvalue().endswith("\n")


def test_tty_bar_format():
    clock, out = FakeClock(), FakeTTY()
    p = Progress(391, "train", stream=out, time_fn=clock)
    clock.t += 62.0
    p.update(176, loss=0.52, acc=0.81, img_s=190.3)
    assert p.bar_line() == (
        "train   45% |█████████           | 176/391 [01:02<01:15, 2.84it/s] loss=0.52 acc=81.0% img/s=190"
    )
    assert out.getvalue().split("\r")[-1] == p.bar_line()
    clock.t += 100
    p.update(215)
    assert "100% |████████████████████| 391/391" in out.getvalue().split("\r")[-1]  # the last step draws
    p.close()
    assert out.getvalue().count("391/391") == 1  # close() does not repeat an up-to-date frame


def test_shorter_frame_blanks_the_previous_one():
    clock, out = FakeClock(), FakeTTY()
    p = Progress(10, "x", stream=out, time_fn=clock)
    p.update(1, note="a long message here")
    clock.t += 1
    p.update(1, note="short")
    last = out.getvalue().split("\r")[-1]
    assert last.rstrip().endswith("note=short") and len(last) >= len(out.getvalue().split("\r")[-2])


def test_unknown_total_and_percent_keys():
    clock, out = FakeClock(), io.StringIO()
    p = Progress(None, "eval", stream=out, unit="img", log_every_s=5, time_fn=clock)
    clock.t += 5
    p.update(640, top1=0.5, val_acc=0.25, top5=1, lr=0.1, loss=12.345, epoch=3)
    assert out.getvalue() == (
        "eval  640 img  elapsed 0:05  128img/s  top1=50.0% val_acc=25.0% top5=1 lr=0.1 loss=12.3 epoch=3\n"
    )
    assert p.bar_line() == (
        "eval  640img [00:05, 128img/s] top1=50.0% val_acc=25.0% top5=1 lr=0.1 loss=12.3 epoch=3"
    )


def test_disabled_writes_nothing_and_close_is_idempotent():
    out = io.StringIO()
    with Progress(10, stream=out, enabled=False, time_fn=FakeClock()) as p:
        p.update(10)
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
    assert "epoch 1 done\n" in out.getvalue() and out.getvalue().endswith(p.bar_line())


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
