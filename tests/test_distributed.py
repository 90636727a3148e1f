"""minigrad.distributed: one process without mpiexec; over 2 MPI processes, gradients averaged,
weights broadcast, metrics summed, and an error on one rank ending both."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from minigrad import distributed

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


def run_ranks(tmp_path: Path, script: str, ranks: int = 2, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``script`` in ``ranks`` MPI processes, in ``tmp_path``. (Results go to files, one a rank:
    lines the ranks print at once can come out interleaved.)"""
    path = tmp_path / "ranks.py"
    path.write_text(textwrap.dedent(script))
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
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
