"""The training progress line: step/total, bar, img/s and ETA first at any width, loss terms as width allows."""

import io
import time

import pytest
from rich.console import Console

from litevae_cli.jobs.progress import TrainProgress, format_eta, train_line

TERMS = {"g/l1": 0.08123, "g/lpips": 0.2345, "g/adv": 0.0, "g/gaussian": 0.06238, "g/kl": 1.2e-6,
         "g/wavelet": 0.01234, "d/loss": 0.0}


def _progress(**kw):
    p = TrainProgress(100_000, 1000, live=False, **kw)
    p.t0 = time.perf_counter() - 30.0  # 200 steps in 30 s: 98800 steps left take 4:07:00
    p.report(1200, 53.25, TERMS)
    return p


@pytest.mark.parametrize("width", [80, 120, 200])
def test_the_line_keeps_step_bar_rate_and_eta_first_and_fits(width):
    line = _progress(print_fn=lambda s: None).line(width)
    assert len(line) <= width, line
    at = [line.index(s) for s in ("1200/100000", "[", "53.2 img/s", "eta 4:07:00")]
    assert at == sorted(at) and at[0] == 0, line
    assert len(line.split("[")[1].split("]")[0]) >= 10  # the bar
    assert "g/adv" not in line and "d/loss" not in line  # always 0 so far: left out
    shown = [k for k in TERMS if k in line]
    assert shown == [k for k in TERMS if k in shown]  # in order, a prefix of the non-zero terms
    if width == 80:
        assert shown and len(shown) < 5
    if width == 200:
        assert shown == ["g/l1", "g/lpips", "g/gaussian", "g/kl", "g/wavelet"]


def test_more_width_shows_more_terms_and_a_term_appears_once_it_is_non_zero():
    p = _progress(print_fn=lambda s: None)
    counts = [sum(k in p.line(w) for k in TERMS) for w in (80, 120, 200)]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    p.report(1300, 50.0, {**TERMS, "g/adv": 0.5})
    assert "g/adv 0.5" in p.line(400) and "d/loss" not in p.line(400)


def test_plain_mode_prints_the_same_facts_with_eta():
    lines = []
    _progress(print_fn=lines.append)
    assert lines == ["step 1200/100000 53.2 img/s eta 4:07:00 g/l1 0.08123 g/lpips 0.2345 g/gaussian 0.06238 "
                     "g/kl 1.2e-06 g/wavelet 0.01234"]


def test_live_line_on_an_80_column_terminal():
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    p = TrainProgress(100, 0, live=True, console=console)
    with p:
        p.t0 -= 10.0
        p.report(50, 12.0, {"g/l1": 0.1, "g/adv": 0.0})
    last = [ln for ln in out.getvalue().replace("\r", "\n").splitlines() if "50/100" in ln][-1]
    assert "[" in last and "12.0 img/s" in last and "eta 0:10" in last and "g/l1 0.1" in last and "g/adv" not in last


def test_eta_format():
    assert (format_eta(None), format_eta(59.6), format_eta(3725), format_eta(float("nan"))) == \
        ("--:--", "1:00", "1:02:05", "--:--")


def test_a_training_run_without_a_terminal_prints_plain_lines_with_eta(tmp_path, capsys, one_torch_thread):
    import re

    from conftest import image_folder, write_preset

    from litevae_cli.training.loop import train

    preset = write_preset(tmp_path / "p.yaml", {"train": {"steps": 2, "seed": 0}})
    assert train("pretrain", preset, str(image_folder(tmp_path / "img")), tmp_path / "run", device="cpu") == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("step ")]
    assert [ln.split()[1] for ln in lines] == ["1/2", "2/2"], lines
    assert all(re.search(r" [\d.]+ img/s eta \d+:\d\d", ln) for ln in lines), lines
    assert "eta 0:00" in lines[-1] and "g/l1" in lines[-1], lines
