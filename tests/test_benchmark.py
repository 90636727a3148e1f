"""examples/benchmark.py, and the table of variants of ``python -m swin``."""
import json
import re
import sys

import numpy
import pytest

from swin import VARIANTS, swin_mini

from example_scripts import usage_error
import benchmark


def run_benchmark(monkeypatch, argv):
    monkeypatch.setattr(sys, "argv", ["benchmark.py", *argv])
    benchmark.main()


@pytest.mark.parametrize("option", ["--batch-size", "--classes", "--steps"])
def test_the_benchmark_refuses_counts_below_one(monkeypatch, capsys, option):
    message = usage_error(capsys, lambda argv: run_benchmark(monkeypatch, argv), [option, "0"])
    assert f"{option} must be at least 1, got 0" in message


def test_the_benchmark_refuses_an_image_size_the_model_cannot_take(monkeypatch, capsys):
    message = usage_error(capsys, lambda argv: run_benchmark(monkeypatch, argv), ["--model", "swin_mini",
                                                                                 "--img-size", "60"])
    assert "--img-size 60 does not fit swin_mini" in message


def test_the_benchmark_never_writes_over_a_json_file(monkeypatch, capsys, tmp_path):
    (tmp_path / "figures.json").write_text("mine")
    message = usage_error(capsys, lambda argv: run_benchmark(monkeypatch, argv),
                          ["--json", str(tmp_path / "figures.json")])
    assert "exists already" in message and (tmp_path / "figures.json").read_text() == "mine"


def test_the_benchmark_times_minigrad_on_the_cpu_and_writes_its_figures(monkeypatch, capsys, tmp_path):
    run_benchmark(monkeypatch, ["--model", "swin_mini", "--batch-size", "1", "--steps", "2", "--warmup", "0",
                                "--device", "CPU", "--no-torch", "--json", str(tmp_path / "figures.json")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("swin_mini, batch 1, 64 px, on cpu (")
    assert re.fullmatch(r"  minigrad +[\d.]+ \([\d.]+-[\d.]+\) +[\d.]+ \([\d.]+-[\d.]+\) +[\d.]+ +[\d.]+ +\d+",
                        lines[2]), lines[2]
    assert lines[3] == "  PyTorch eager not measured: --no-torch"
    figures = json.loads((tmp_path / "figures.json").read_text())
    ours = figures["minigrad"]
    assert ours["train_step"]["min_s"] <= ours["train_step"]["median_s"] <= ours["train_step"]["max_s"]
    assert ours["images_per_s"] == pytest.approx(1 / ours["train_step"]["median_s"])
    flops = swin_mini(num_classes=11).flops()
    assert figures["multiply_adds_per_image"] == flops
    assert ours["train_gflop_per_s"] == pytest.approx(6 * flops / ours["train_step"]["median_s"] / 1e9)
    assert ours["peak_memory_bytes"] > 0


class Scripted:
    """A contender whose steps take set times, and that logs the order they ran in."""

    log: list = []

    def __init__(self, name, step_s, forward_s, memory):
        self.name, self.step_s, self.forward_s, self.memory = name, step_s, forward_s, memory
        self.model = swin_mini(num_classes=11)

    def train_step(self):
        Scripted.log.append((self.name, "train_step"))

    def forward(self):
        Scripted.log.append((self.name, "forward"))

    def clock(self, run):
        run()
        seconds = self.step_s if Scripted.log[-1][1] == "train_step" else self.forward_s
        return seconds, seconds


def test_the_benchmark_interleaves_the_two_frameworks_and_reports_the_ratios(monkeypatch, capsys):
    Scripted.log = []
    monkeypatch.setattr(benchmark, "Minigrad", lambda args, images, labels: Scripted("minigrad", 0.5, 0.2, 0))
    monkeypatch.setattr(benchmark, "Torch", lambda args, images, labels: Scripted("torch", 0.2, 0.1, 0))
    monkeypatch.setattr(benchmark, "torch_available", lambda args: None)
    memory = iter([300 * 2**20, 200 * 2**20])
    monkeypatch.setattr(benchmark, "_peak_since_now", lambda device, framework: lambda: next(memory))
    run_benchmark(monkeypatch, ["--model", "swin_mini", "--batch-size", "4", "--steps", "3", "--warmup", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split()[:3] == ["minigrad", "500.0", "(500.0-500.0)"]
    assert lines[3].split()[:4] == ["PyTorch", "eager", "200.0", "(200.0-200.0)"]
    assert lines[2].split()[5] == "8.0" and lines[3].split()[6] == "20.0"  # images/s
    assert lines[2].split()[7] == "300" and lines[3].split()[8] == "200"  # peak MB
    assert lines[4] == "  minigrad / PyTorch: training step 2.50, forward 2.00, peak memory 1.50"
    timed = [entry for entry in Scripted.log[4:] if entry[1] == "train_step"][2:]  # after both memory runs
    assert [name for name, _ in timed[:6]] == ["minigrad", "torch"] * 3  # one of each in turn


def test_on_a_gpu_the_report_gives_the_hosts_time_to_queue_a_step_and_a_forward(capsys):
    figures = {"train_step": {"median_s": 0.072, "min_s": 0.071, "max_s": 0.075},
               "forward": {"median_s": 0.028, "min_s": 0.027, "max_s": 0.029}, "peak_memory_bytes": 2**30,
               "images_per_s": 889.0, "train_gflop_per_s": 23000.0, "host_s": {"train_step": 0.05, "forward": 0.02}}
    results = {"model": "swin_t", "batch_size": 64, "img_size": 224, "device": "gpu", "threads": 16,
               "minigrad": figures, "reference_missing": "--no-torch"}
    benchmark.print_report(results, 5)
    lines = capsys.readouterr().out.splitlines()
    assert lines[3].startswith("  the host's time to queue them") and lines[3].endswith("minigrad step 50.0, forward 20.0")


@pytest.mark.torch
def test_the_benchmark_times_the_same_model_in_pytorch():
    """timm's Swin-T by default drops paths at rates up to 0.1; ours, as the official config, up to 0.2."""
    pytest.importorskip("timm")
    args = benchmark.make_parser().parse_args([])
    args.img_size = 224
    images, labels = numpy.zeros((1, 3, 224, 224), numpy.float32), numpy.zeros(1, numpy.int64)
    ours, theirs = benchmark.Minigrad(args, images, labels).model, benchmark.Torch(args, images, labels).model
    assert sum(p.size for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    our_rates = [block.drop_path.p if block.drop_path.__class__.__name__ == "DropPath" else 0.0
                 for stage in ours.layers for block in stage.blocks]
    their_rates = [getattr(block.drop_path1, "drop_prob", 0.0) for stage in theirs.layers for block in stage.blocks]
    assert their_rates == pytest.approx(our_rates) and max(our_rates) == pytest.approx(0.2)


def test_on_the_stand_in_gpu_the_benchmark_counts_array_operations(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MINIGRAD_FAKE_GPU", "1")
    run_benchmark(monkeypatch, ["--model", "swin_mini", "--batch-size", "1", "--device", "cuda",
                                "--json", str(tmp_path / "counts.json")])
    lines = capsys.readouterr().out.splitlines()
    assert "stand-in GPU" in lines[0] and "not times" in lines[0]
    counts = json.loads((tmp_path / "counts.json").read_text())["array_operations"]
    assert lines[-2] == f"array operations per step: {counts['total']}"
    assert counts["total"] == sum(counts[phase] for phase in ("forward", "backward", "clipping", "optimizer", "other"))
    assert 0 < counts["optimizer"] < 40 and 0 < counts["clipping"] < 20  # packed: not per parameter


def test_the_benchmark_takes_the_trainers_option_names_and_its_own_earlier_ones(monkeypatch, capsys):
    monkeypatch.setattr(benchmark, "measure", lambda args, images, labels: {"args": vars(args)})
    monkeypatch.setattr(benchmark, "print_report", lambda results, steps: print(results["args"]))
    for argv in (["--model", "swin_mini", "--batch-size", "3", "--steps", "2"],
                 ["--variant", "swin_mini", "--batch", "3", "--repeats", "2"]):
        run_benchmark(monkeypatch, argv)
        printed = capsys.readouterr().out
        assert "'model': 'swin_mini'" in printed and "'batch_size': 3" in printed and "'steps': 2" in printed


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
