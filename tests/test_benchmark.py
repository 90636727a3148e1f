"""examples/benchmark.py, and the table of variants of ``python -m swin``."""
import re
import sys

import pytest

from swin import VARIANTS

from example_scripts import usage_error
import benchmark


def run_benchmark(monkeypatch, argv):
    monkeypatch.setattr(sys, "argv", ["benchmark.py", *argv])
    benchmark.main()


@pytest.mark.parametrize("option", ["--batch-size", "--classes", "--repeats"])
def test_the_benchmark_refuses_counts_below_one(monkeypatch, capsys, option):
    message = usage_error(capsys, lambda argv: run_benchmark(monkeypatch, argv), [option, "0"])
    assert f"{option} must be at least 1, got 0" in message


def test_the_benchmark_refuses_to_time_the_stand_in_gpu(monkeypatch, capsys):
    monkeypatch.setenv("MINIGRAD_FAKE_GPU", "1")
    message = usage_error(capsys, lambda argv: run_benchmark(monkeypatch, argv), ["--device", "gpu"])
    assert "MINIGRAD_FAKE_GPU=1 serves 'gpu' on the CPU" in message and "unset it" in message


def test_the_benchmark_times_a_step_on_the_cpu(monkeypatch, capsys):
    run_benchmark(monkeypatch, ["--model", "swin_mini", "--batch-size", "1", "--repeats", "1", "--warmup", "0",
                                "--update", "--device", "CPU"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "swin_mini, batch 1, 64 px, forward + backward + clipping + AdamW, median of 1, on cpu"
    assert re.fullmatch(r"  minigrad +\d+\.\d ms/step +\d+\.\d images/s", lines[1])
    assert lines[2].startswith("  PyTorch eager   not measured")  # no timm name for swin_mini


def test_the_benchmark_reports_the_ratio_of_the_times(monkeypatch, capsys):
    monkeypatch.setattr(benchmark, "minigrad_step_time", lambda args, images, labels: 0.5)
    monkeypatch.setattr(benchmark, "torch_step_time", lambda args, images, labels: 0.2)
    run_benchmark(monkeypatch, ["--model", "swin_mini", "--batch-size", "4"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["minigrad", "500.0", "ms/step", "8.0", "images/s"]
    assert lines[2].split() == ["PyTorch", "eager", "200.0", "ms/step", "20.0", "images/s"]
    assert lines[3] == "  minigrad / PyTorch time ratio: 2.50"


def test_the_benchmark_takes_the_trainers_option_names_and_its_own_earlier_ones(monkeypatch, capsys):
    monkeypatch.setattr(benchmark, "minigrad_step_time", lambda args, images, labels: 0.5)
    monkeypatch.setattr(benchmark, "torch_step_time", lambda args, images, labels: None)
    for argv in (["--model", "swin_mini", "--batch-size", "3"], ["--variant", "swin_mini", "--batch", "3"]):
        run_benchmark(monkeypatch, argv)
        assert capsys.readouterr().out.startswith("swin_mini, batch 3, 64 px")
    monkeypatch.setenv("MINIGRAD_FAKE_GPU", "1")  # cuda is the trainers' alias of gpu: here the stand-in, refused
    message = usage_error(capsys, lambda argv: run_benchmark(monkeypatch, argv), ["--device", "cuda"])
    assert "MINIGRAD_FAKE_GPU=1 serves 'gpu'" in message


def test_a_timing_warms_up_then_takes_the_median_of_the_clock():
    steps, times = [], iter([3.0, 1.0, 10.0])

    def clock(step):
        step()
        return next(times)

    assert benchmark.median_seconds(lambda: steps.append(1), 3, 2, clock) == 3.0
    assert len(steps) == 2 + 3


def test_python_m_swin_answers_help_and_a_typo_without_building_a_model(monkeypatch, capsys):
    import swin.__main__ as table

    def build(*args, **kwargs):
        raise AssertionError("built a model")

    monkeypatch.setattr(table, "build", build)
    with pytest.raises(SystemExit) as stop:
        table.main(["--help"])
    assert stop.value.code == 0 and "python -m swin" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        table.main(["--variant", "swin_t"])
    assert stop.value.code == 2 and "unrecognized arguments: --variant swin_t" in capsys.readouterr().err


def test_python_m_swin_lists_each_variant_at_its_image_sizes(monkeypatch, capsys):
    import swin.__main__ as table

    class Built:
        def __init__(self, name, img_size):
            self.window_size, self.name, self.img_size = img_size // 32, name, img_size

        def num_parameters(self):
            return 1000 * len(self.name) + self.img_size

        def flops(self):
            return 10**6 * self.img_size

    monkeypatch.setattr(table, "build", lambda name, img_size: Built(name, img_size))
    table.main()
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["variant", "image", "window", "parameters", "multiply-adds"]
    expected = [(name, size) for name in VARIANTS for size in ((64,) if name == "swin_mini" else (224, 384))]
    assert [tuple(row.split()[:2]) for row in rows] == [(name, str(size)) for name, size in expected]
    assert rows[0].split()[2:] == ["7", f"{1000 * 6 + 224:,}", f"{224 * 10**6:,}"]  # swin_t at 224
