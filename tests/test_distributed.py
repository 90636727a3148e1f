"""minigrad.distributed: one process without mpiexec; over 2 MPI processes, gradients averaged,
weights broadcast, metrics summed, and an error on one rank ending both."""
import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import minigrad
from minigrad import backend, distributed
from swin import swin_mini

ROOT = Path(__file__).resolve().parent.parent


def test_without_mpiexec_it_is_one_process_and_mpi_is_not_imported(monkeypatch):
    for name in distributed._LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    distributed._world.cache_clear()
    try:
        assert not distributed.launched_by_mpi()
        assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
        gradients = [np.arange(3.0), np.ones((2, 2))]
        distributed.all_reduce_mean_(gradients)
        distributed.broadcast_(gradients)
        np.testing.assert_array_equal(gradients[0], [0.0, 1.0, 2.0])
        assert distributed.all_reduce_sum(5) == 5
        with pytest.raises(ValueError, match="raised as it is"):
            with distributed.ending_all_ranks_on_error():
                raise ValueError("raised as it is")
        assert distributed._world() is None  # no communicator, so no MPI
    finally:
        distributed._world.cache_clear()


def test_mpiexec_without_mpi4py_says_what_to_install(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    distributed._world.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r'started by mpiexec.*pip install -e "\.\[mpi\]"'):
            distributed.rank()
    finally:
        distributed._world.cache_clear()


def mpiexec() -> str:
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install -e \".[mpi]\")")
    launcher = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if launcher is None:
        pytest.skip("no mpiexec on this machine (pip install -e \".[mpi]\" brings MPICH's)")
    return launcher


# Open MPI's mpiexec refuses to start as root (in a container, on the GPU machine) without these; MPICH's
# ignores them.
AS_ROOT_TOO = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def run_ranks(tmp_path: Path, script: str, ranks: int = 2, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``script`` in ``ranks`` MPI processes, in ``tmp_path``. (Results go to files, one a rank:
    lines the ranks print at once can come out interleaved.)"""
    path = tmp_path / "ranks.py"
    path.write_text(textwrap.dedent(script))
    environment = {**os.environ, **AS_ROOT_TOO, "PYTHONPATH": str(ROOT)}
    return subprocess.run([mpiexec(), "-n", str(ranks), sys.executable, str(path)], capture_output=True,
                          text=True, timeout=timeout, env=environment, cwd=tmp_path)


def test_two_ranks_average_gradients_broadcast_weights_and_sum_metrics(tmp_path):
    result = run_ranks(tmp_path, """
        import json
        import numpy as np
        from minigrad import distributed
        r = distributed.rank()
        gradients = [np.full(3, float(r + 1)), np.arange(4.0).reshape(2, 2) * (r + 1)]
        distributed.all_reduce_mean_(gradients)
        weights = [np.full(2, 10.0 * (r + 1))]
        distributed.broadcast_(weights)
        counts = distributed.all_reduce_sum(np.array([r, 1]))
        report = {"rank": r, "size": distributed.world_size(), "main": distributed.is_main(),
                  "gradients": [g.tolist() for g in gradients], "weights": weights[0].tolist(),
                  "counts": counts.tolist()}
        open(f"rank{r}.json", "w").write(json.dumps(report))
    """)
    assert result.returncode == 0, result.stderr
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(r["rank"], r["size"], r["main"]) for r in reports] == [(0, 2, True), (1, 2, False)]
    for report in reports:
        assert report["gradients"] == [[1.5] * 3, [[0.0, 1.5], [3.0, 4.5]]]
        assert report["weights"] == [10.0, 10.0]
        assert report["counts"] == [1, 2]


def test_a_data_parallel_step_equals_the_step_of_one_process_on_the_whole_batch(tmp_path):
    """Each rank takes half of a global batch of 8; the averaged gradients are those of the whole
    batch in one process, to float64 rounding."""
    result = run_ranks(tmp_path, """
        import json
        import numpy as np
        import minigrad
        from minigrad import distributed, nn
        from minigrad import functional as F

        def gradients(images, labels):
            minigrad.manual_seed(0)
            model = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 3)).to(dtype=np.float64)
            F.cross_entropy(model(images), labels).backward()
            return [p.grad for p in model.parameters()]

        rng = np.random.default_rng(1)
        images, labels = rng.standard_normal((8, 6)), rng.integers(0, 3, 8)
        r, size = distributed.rank(), distributed.world_size()
        share = slice(r * 8 // size, (r + 1) * 8 // size)
        mine = gradients(images[share], labels[share])
        distributed.all_reduce_mean_(mine)
        whole = gradients(images, labels)
        difference = max(float(np.abs(a - b).max() / (np.abs(b).max() + 1e-300)) for a, b in zip(mine, whole))
        open(f"rank{r}.json", "w").write(json.dumps(difference))
    """)
    assert result.returncode == 0, result.stderr
    differences = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert max(differences) < 1e-12


def test_an_error_on_one_rank_ends_every_rank_with_its_message(tmp_path):
    result = run_ranks(tmp_path, """
        import numpy as np
        from minigrad import distributed
        with distributed.ending_all_ranks_on_error():
            if distributed.rank() == 1:
                raise ValueError("a truncated JPEG on rank 1")
            distributed.all_reduce_mean_([np.ones(3)])  # rank 0 waits here for rank 1
            print("rank 0 went on")
    """, timeout=60)
    assert result.returncode != 0
    assert "[rank 1 of 2]" in result.stderr and "a truncated JPEG on rank 1" in result.stderr
    assert "rank 0 went on" not in result.stdout


def test_draws_within_a_share_of_the_batch_are_the_rows_of_the_whole_batchs_draw():
    whole = []
    for shares in ([None], [(0, 2, 6), (2, 2, 6), (4, 2, 6)]):
        rows = []
        for share in shares:
            minigrad.manual_seed(7)
            with backend.batch_share(*share) if share else contextlib.nullcontext():
                first = backend.random_uniform((2 * 3 if share else 6 * 3, 4), "float64", "cpu")  # 3 rows a sample
                per_sample = backend.random_uniform((2 if share else 6, 1), "float32", "cpu")
                odd = backend.random_uniform((5,), "float64", "cpu")  # not a multiple of the share: drawn as asked
            after = backend.random_uniform((3,), "float64", "cpu")  # the generator went on as the whole draw's
            rows.append((first, per_sample, odd, after))
        whole.append(rows)
    (single,), shared = whole
    np.testing.assert_array_equal(np.concatenate([rows[0] for rows in shared]), single[0])
    np.testing.assert_array_equal(np.concatenate([rows[1] for rows in shared]), single[1])
    for rows in shared:
        np.testing.assert_array_equal(rows[3], shared[0][3])
    with pytest.raises(ValueError, match="rows 4:8 are not a share of a batch of 6"):
        with backend.batch_share(4, 4, 6):
            pass


def run_script(tmp_path: Path, script: str, ranks: int | None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run an example script's command line (``script`` and its arguments, a list) in ``ranks`` MPI
    processes, or in one plain process for None."""
    launcher = [] if ranks is None else [mpiexec(), "-n", str(ranks)]
    environment = {**os.environ, **AS_ROOT_TOO, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "examples")]),
                   "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run(launcher + [sys.executable, *script], capture_output=True, text=True, timeout=timeout,
                          env=environment, cwd=tmp_path)


def test_a_data_parallel_training_step_equals_one_process_on_the_whole_batch_in_float64(tmp_path):
    """The training loop's step (drop-path on, label smoothing, clipping that bites, SGD with momentum
    and weight decay) over 2 ranks, each with half of each batch of 8, against one process: the
    weights after 3 steps and the last step's averaged, clipped gradients. (SGD, as its step is
    linear in the gradient: Adam divides each gradient by its own size, so the last bits of a
    gradient near 0, which the sum of two halves rounds otherwise, would show in its step.)"""
    script = tmp_path / "steps.py"
    script.write_text(textwrap.dedent("""
        import argparse
        import numpy as np
        import minigrad
        import optim
        from minigrad import distributed
        from swin import swin_mini
        import training

        minigrad.manual_seed(0)
        model = swin_mini(img_size=32, num_classes=11, drop_path_rate=0.3).to(dtype=np.float64)
        optimizer = optim.SGD(optim.weight_decay_groups(model, 0.05), lr=0.1, momentum=0.9)
        args = argparse.Namespace(label_smoothing=0.1, clip_grad=0.5)
        rng = np.random.default_rng(1)
        r, size = distributed.rank(), distributed.world_size()
        for step in range(3):
            images, labels = rng.standard_normal((8, 3, 32, 32)), rng.integers(0, 11, 8)
            share = slice(r * 8 // size, (r + 1) * 8 // size)
            minigrad.manual_seed(100 + step)
            loss, _ = training.training_step(model, optimizer, images[share], labels[share], args)
        gradients = {f"grad {name}": p.grad for name, p in model.named_parameters()}
        np.savez(f"rank{r}of{size}.npz", **{k: np.asarray(v) for k, v in model.state_dict().items()}, **gradients)
    """))
    for ranks in (None, 2):
        result = run_script(tmp_path, [str(script)], ranks)
        assert result.returncode == 0, result.stderr
    single = np.load(tmp_path / "rank0of1.npz")
    start = swin_mini(img_size=32, num_classes=11).state_dict()
    for r in range(2):
        parallel = np.load(tmp_path / f"rank{r}of2.npz")
        for key in single.files:
            scale = np.abs(single[key]).max() + 1e-300
            assert np.abs(parallel[key] - single[key]).max() / scale < 1e-12, key
    clipped = np.sqrt(sum((single[key] ** 2).sum() for key in single.files if key.startswith("grad ")))
    assert clipped == pytest.approx(0.5)  # clipping did bite
    moved = [key for key in start if not np.array_equal(single[key], start[key])]
    assert len(moved) > 50  # the steps did train (and so the comparison compares steps)


TRAIN_DVM = [str(ROOT / "examples" / "train_dvm.py"), "--model", "swin_mini", "--img-size", "32", "--synthetic-size",
             "44", "--batch-size", "8", "--workers", "0", "--optimizers", "sgd", "--lr", "0.05"]


def assert_same_training(folder: Path, reference: Path) -> None:
    """The same epochs, losses and accuracies, and the same weights, to float32's rounding of
    sums taken in another order."""
    ours, theirs = (minigrad.load(path / "sgd" / "last.npz") for path in (folder, reference))
    assert [row["epoch"] for row in ours["history"]] == [row["epoch"] for row in theirs["history"]]
    for row, expected in zip(ours["history"], theirs["history"]):
        for key in ("train_loss", "val_loss"):
            assert row[key] == pytest.approx(expected[key], rel=1e-6), key
        for key in ("train_acc", "val_acc", "steps", "lr"):
            assert row[key] == expected[key], key
    for key, expected in theirs["model"].items():
        np.testing.assert_allclose(ours["model"][key], expected, rtol=0, atol=1e-5 * np.abs(expected).max(),
                                   err_msg=key)


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory) -> Path:
    """Two epochs of the quick start's script (drop-path on), in one process."""
    folder = tmp_path_factory.mktemp("one process")
    result = run_script(folder, TRAIN_DVM + ["--epochs", "2", "--out", "run"], None)
    assert result.returncode == 0, result.stderr
    return folder / "run"


def test_mpiexec_trains_the_quick_start_as_one_process_and_rank_0_alone_writes(tmp_path, one_process_run):
    result = run_script(tmp_path, TRAIN_DVM + ["--epochs", "2", "--out", "run"], 2)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]  # no second run folder
    assert ({path.relative_to(tmp_path / "run") for path in (tmp_path / "run").rglob("*")}
            == {path.relative_to(one_process_run) for path in one_process_run.rglob("*")})
    assert_same_training(tmp_path / "run", one_process_run)
    assert result.stdout.count("sgd epoch 2: train loss") == 1  # one rank speaks


@pytest.mark.parametrize("first, then", [(2, None), (None, 2)], ids=["2 ranks, then 1", "1, then 2 ranks"])
def test_a_run_resumes_with_another_number_of_ranks_as_if_never_stopped(tmp_path, one_process_run, first, then):
    started = run_script(tmp_path, TRAIN_DVM + ["--epochs", "1", "--out", "run"], first)
    assert started.returncode == 0, started.stderr
    resumed = run_script(tmp_path, TRAIN_DVM[:1] + ["--resume", "--out", "run", "--epochs", "2"], then)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("sgd: resuming after epoch 1") == 1
    assert_same_training(tmp_path / "run", one_process_run)


def test_a_failure_on_rank_1_of_a_training_run_ends_rank_0_with_its_message(tmp_path):
    script = tmp_path / "failing.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        import training
        from minigrad import distributed
        sys.argv[0] = {TRAIN_DVM[0]!r}
        step = training.training_step

        def failing_on_rank_1(model, optimizer, images, labels, args):
            if distributed.rank() == 1:
                raise OSError("image file is truncated (rank 1's photo)")
            return step(model, optimizer, images, labels, args)

        training.training_step = failing_on_rank_1
        exec(open(sys.argv[0]).read(), {{"__name__": "__main__", "__file__": sys.argv[0]}})
    """))
    result = run_script(tmp_path, [str(script)] + TRAIN_DVM[1:] + ["--epochs", "1"], 2, timeout=120)
    assert result.returncode != 0
    assert "[rank 1 of 2] train_dvm.py: error: image file is truncated (rank 1's photo)" in result.stderr


def test_a_batch_that_does_not_split_over_the_ranks_is_refused_before_training(tmp_path):
    result = run_script(tmp_path, TRAIN_DVM + ["--batch-size", "7"], 2, timeout=120)
    assert result.returncode == 2
    assert "--batch-size 7 does not split evenly over the 2 processes of mpiexec: pass a multiple of 2" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.gpu
def test_nccl_reduces_and_broadcasts_gpu_arrays_in_place_with_one_rank(tmp_path):
    """The GPU path of the all-reduce and the broadcast, device to device through NCCL (one rank:
    NCCL refuses two ranks on one GPU). Needs a real GPU; the stand-in cannot play NCCL."""
    if backend.fake_gpu_enabled() or not backend.is_gpu_available():
        pytest.skip("NCCL needs a real GPU")
    result = run_ranks(tmp_path, """
        import json
        import cupy
        from minigrad import distributed
        nccl = distributed._nccl()
        gradients = cupy.arange(6, dtype=cupy.float32) * 0.5
        where = gradients.data.ptr
        nccl.all_reduce_sum_(gradients)  # over one rank: itself
        weights = cupy.arange(4, dtype=cupy.float64)
        nccl.broadcast_(weights, 0)
        try:
            nccl.all_reduce_sum_(cupy.zeros((4, 4), dtype=cupy.float32)[:, ::2])
            refused = ""
        except ValueError as error:
            refused = str(error)
        report = {"gradients": gradients.get().tolist(), "in place": gradients.data.ptr == where,
                  "weights": weights.get().tolist(), "refused": refused}
        open("rank0.json", "w").write(json.dumps(report))
    """, ranks=1)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "rank0.json").read_text())
    assert report["gradients"] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5] and report["in place"]
    assert report["weights"] == [0.0, 1.0, 2.0, 3.0]
    assert "contiguous" in report["refused"]


def test_each_rank_takes_the_gpu_of_its_number_on_its_machine(monkeypatch):
    used = []

    class Runtime:
        class CUDARuntimeError(RuntimeError):
            pass

        count = 4

        @classmethod
        def getDeviceCount(cls):
            if cls.count is None:
                raise cls.CUDARuntimeError("cudaErrorNoDevice")
            return cls.count

    class Device:
        def __init__(self, number):
            self.number = number

        def use(self):
            used.append(self.number)

    cuda = type("cuda", (), {"runtime": Runtime, "Device": Device})
    monkeypatch.setattr(backend, "cupy", type("cupy", (), {"cuda": cuda}))
    monkeypatch.setattr(distributed, "world_size", lambda: 8)
    for local in (0, 3, 5):  # 8 ranks over two machines of 4 GPUs; a 5th rank on one wraps round
        monkeypatch.setattr(distributed, "local_rank", lambda: local)
        distributed.use_local_gpu()
    Runtime.count = 1  # CUDA_VISIBLE_DEVICES shows this rank one GPU: that one
    distributed.use_local_gpu()
    Runtime.count = None  # no GPU: nothing chosen, and asking for "gpu" says why later
    distributed.use_local_gpu()
    assert used == [0, 3, 1, 0]
    monkeypatch.setattr(distributed, "world_size", lambda: 1)  # one process: the GPU CUDA gives it
    distributed.use_local_gpu()
    assert used == [0, 3, 1, 0]
