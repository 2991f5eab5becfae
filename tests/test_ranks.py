"""MGDA and CCSA on several ranks behave like MSeg's (reference §5, §6): the dataset-per-rank layout,
datasets absent from a rank, independent random numbers per rank, exact resume of every stream."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch
from torch import nn

from helpers import REPO, TINY, pinned_args
from leftovers import MarkedRun, read_until, trainer_of_rank
from mseg_fast.config import load_config
from mseg_fast.data.batch import Batch
from mseg_fast.errors import UserError
from mseg_fast.models.outputs import SegOutputs
from mseg_fast.train.loop import NonFiniteGradient
from mseg_fast.train.mgda import gram_matrix, mgda_step
from test_train import CONFIG, final_weights

GLOO = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(nproc: int, port: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(port),
               *args]
    return subprocess.run(command, capture_output=True, text=True, env=GLOO, timeout=timeout)


@pytest.mark.parametrize("layout", ["mapping", "ignore"])
def test_mgda_on_three_ranks_equals_one_process(tmp_path, layout):
    """'mapping': each rank holds one dataset (MSeg's layout); the solve still sees all three datasets, each
    gradient averaged over the ranks that hold it. 'ignore': one rank's crop of a dataset is all ignore; the
    ranks still agree on the tasks (no hang, no dataset's gradient summed into another's)."""
    out = tmp_path / "result.json"
    result = torchrun(3, 29581 if layout == "mapping" else 29582, str(REPO / "tests" / "mgda_ranks.py"), layout,
                      str(out), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads(out.read_text())
    assert set(record["ranks"]) == set(record["single"]) == {"0", "1", "2"}
    for dataset, weight in record["single"].items():
        assert record["ranks"][dataset] == pytest.approx(weight, abs=1e-5)


class TwoHeads(nn.Module):
    """A main and an auxiliary head, as PSPNet has, on a few pixels."""

    def __init__(self):
        super().__init__()
        self.main, self.aux = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)

    def forward(self, images, extras=False):
        return SegOutputs(self.main(images), self.aux(images), None) if extras else self.main(images)


def mgda_once(model: nn.Module, batch: Batch, **kwargs):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return mgda_step(model, batch, torch.ones(2), optimizer, torch.amp.GradScaler("cpu", enabled=False), "fp32",
                     **kwargs)


def test_mgda_adds_the_auxiliary_loss_and_skips_a_batch_without_labels():
    torch.manual_seed(0)
    model = TwoHeads()
    images, labels = torch.randn(2, 3, 5, 5), torch.randint(0, 4, (2, 5, 5))
    with torch.no_grad():
        outputs = model(images, extras=True)
    result = mgda_once(model, Batch(images, labels, torch.tensor([0, 1])), aux_weight=0.4)
    for d in (0, 1):
        main = nn.functional.cross_entropy(outputs.logits[d:d + 1], labels[d:d + 1])
        aux = nn.functional.cross_entropy(outputs.aux[d:d + 1], labels[d:d + 1])
        assert float(result.parts[d]) == pytest.approx(float(main + 0.4 * aux), rel=1e-5)
    before = [p.detach().clone() for p in model.parameters()]
    empty = mgda_once(model, Batch(images, torch.full_like(labels, 255), torch.tensor([0, 1])))
    assert empty.skipped and empty.part_values() == {}
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "no update without labels"


def test_mgda_stops_on_a_non_finite_gradient_naming_the_dataset():
    images, labels = torch.randn(2, 3, 5, 5), torch.randint(0, 4, (2, 5, 5))
    # Finite pixels whose logits overflow: dataset 1's loss and gradient are NaN, dataset 0's stay finite.
    # (An inf pixel would poison every dataset's weight gradient through 0 x inf.)
    images[1] = 3e38
    model = TwoHeads()
    nn.init.constant_(model.main.weight, 1.0)
    with pytest.raises(NonFiniteGradient) as caught:
        mgda_once(model, Batch(images, labels, torch.tensor([0, 1])))
    assert caught.value.dataset_id == 1


def test_gram_matrix_is_float64():
    # Two nearly parallel float32 vectors of 10^6 entries: float32 accumulation loses the difference.
    v = torch.ones(2, 1_000_000)
    v[1, 0] += 1e-3
    gram = gram_matrix(v)
    assert gram.dtype == torch.float64 and float(gram[1, 1] - gram[0, 1]) == pytest.approx(1e-3, rel=1e-2)


def test_mgda_with_fp16_is_refused_when_the_config_is_read():
    with pytest.raises(UserError, match="use_mgda.*fp16|fp16.*use_mgda|precision=fp32"):
        load_config(None, ["use_mgda=True", "precision=fp16", "dataset=[a, b]"])


def test_mgda_under_the_mapping_trains_on_three_ranks(demo_shards, tmp_path):
    mapping = "dataset_gpu_mapping={demo-streets: [0], demo-rooms: [1], demo-fields: [2]}"
    result = torchrun(3, 29583, str(REPO / "train.py"), CONFIG, f"shards={demo_shards}",
                      f"save_path={tmp_path / 'run'}", "max_iters=2", "save_every=2", "print_freq=1", "val_every=0",
                      "use_mgda=True", mapping)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "crops per step {'demo-streets': 2, 'demo-rooms': 2, 'demo-fields': 2}" in result.stdout
    # MGDA through train.py under torchrun with gloo: a line of scales each iteration, from rank 0 alone.
    scales = re.findall(r"scales demo-streets=[0-9.]+ demo-rooms=[0-9.]+ demo-fields=[0-9.]+", result.stdout)
    assert len(scales) == 2


def test_mgda_names_the_dataset_and_iteration_of_a_non_finite_gradient(demo_shards, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "train.py"), CONFIG, f"shards={demo_shards}",
                             f"save_path={tmp_path / 'run'}", "max_iters=20", "val_every=0", "use_mgda=True",
                             "base_lr=1e12"], capture_output=True, text=True)
    assert result.returncode == 3, result.stdout + result.stderr
    assert re.search(r"error: non-finite gradient of dataset demo-\w+ at iteration \d+", result.stderr)


def test_ccsa_on_two_ranks_draws_per_rank_and_resumes_exactly_after_kill_9(demo_shards, tmp_path):
    """Each rank draws its own CCSA pairs (its own generator state); a rank killed with -9 under
    --max-restarts (c10d rendezvous, as elastic jobs run) restarts the group from the last checkpoint, the
    run ends with the weights of an uninterrupted one (every rank's generators and the loader's stream
    restored), and no process or shared-memory entry of the killed group outlives the run."""
    args = [CONFIG, f"shards={demo_shards}", "max_iters=6", "save_every=2", "print_freq=1", "val_every=0",
            "use_ccsa=True", "batch_size=12", "workers=1"]
    straight = torchrun(2, 29584, str(REPO / "train.py"), *args, f"save_path={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stdout + straight.stderr
    assert len(re.findall(r"terms csa=[0-9.]+ ce=[0-9.]+ positives=100\.0+ negatives=300\.0+", straight.stdout)) == 6
    reference = final_weights(tmp_path / "straight")
    rank0, rank1 = reference["rng"]
    assert not torch.equal(rank0["cpu"], rank1["cpu"]), "both ranks drew the same random numbers"

    run = MarkedRun(tmp_path)
    process = run.start([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--max-restarts", "1",
                         "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:29585",
                         # torchrun's own record of attempts, kept by design; by default a new folder in /tmp.
                         "--log-dir", str(tmp_path / "torchelastic"), str(REPO / "train.py"),
                         *args, f"save_path={tmp_path / 'killed'}", "--resume", "auto"])
    output = read_until(process, "iter 3/6")  # past the checkpoint of iteration 2
    os.kill(trainer_of_rank(run.mark, 1), signal.SIGKILL)
    output += process.communicate(timeout=300)[0]
    assert process.returncode == 0, output
    assert re.search(r"resuming at iteration [24]", output)
    resumed = final_weights(tmp_path / "killed")
    assert resumed["iteration"] == 6
    assert all(torch.equal(reference["model"][k], resumed["model"][k]) for k in reference["model"]), \
        "the restarted group continues exactly"
    run.assert_nothing_left()


def test_two_nodes_on_this_machine_train_as_one_node_with_two_ranks(demo_shards, pinned_two_ranks, tmp_path):
    """`torchrun --nnodes 2` (one process each, rendezvous on 127.0.0.1): ranks by node, shards split by global
    rank, one writer of logs and checkpoints, and exactly the weights of one node with two ranks (the shared
    pinned run)."""
    args = [CONFIG, f"shards={demo_shards}", *pinned_args()]
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
                               "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", "29592",
                               str(REPO / "train.py"), *args, f"save_path={tmp_path / 'two'}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=GLOO) for node in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), outputs
    assert "global batch 6 (2 ranks)" in outputs[0][0] and "iter" not in outputs[1][0], "rank 0 alone logs"
    log = (tmp_path / "two" / "train.log").read_text()
    assert log.count("iter 3/3 ") == 1 and log.count("checkpoint ") == 1, "one writer of logs and checkpoints"
    a, b = final_weights(pinned_two_ranks)["model"], final_weights(tmp_path / "two")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), "two nodes train exactly as one node with two ranks"


def test_sigterm_to_one_rank_stops_every_rank_at_the_same_iteration(demo_shards, tmp_path):
    """A pre-emption signal reaches ranks at different moments (here: only rank 1): all checkpoint the same
    iteration and exit cleanly, instead of one entering the checkpoint's collectives while another steps."""
    run = MarkedRun(tmp_path)
    process = run.start([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                         "29593", "--log-dir", str(tmp_path / "torchelastic"), str(REPO / "train.py"), CONFIG,
                         f"shards={demo_shards}", f"save_path={tmp_path / 'run'}", "max_iters=200", "save_every=1000",
                         "print_freq=1", "val_every=0"])
    output = read_until(process, "iter 2/")
    os.kill(trainer_of_rank(run.mark, 1), signal.SIGTERM)
    output += process.communicate(timeout=120)[0]
    assert process.returncode == 0, output
    assert "SIGTERM: checkpoint written at iteration" in output
    assert 2 <= final_weights(tmp_path / "run")["iteration"] < 200
    run.assert_nothing_left()


def test_compile_with_ddp_and_sync_batchnorm_on_two_ranks(demo_shards, pinned_two_ranks, tmp_path):
    """torch.compile in train.py over DDP and the CPU twin of SyncBatchNorm on 2 gloo ranks: Dynamo and
    AOTAutograd trace HRNet's forward and backward (aot_eager runs the traced graphs without inductor's code
    generation, minutes of C++ compiling on 2 cores with a cold cache; gpu_check runs inductor on a GPU). It
    trains as the eager pinned run does, to float rounding, and the checkpoint holds the plain model's keys.
    (Compiled and eager runs in channels_last agree exactly too; channels_last against the default layout
    differs by ~4 % of the update after 3 steps of this tiny recipe, in one process as on two: BatchNorm over
    3 crops amplifies the other summation order, so the two layouts are not compared here.)"""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29597",
               str(REPO / "train.py"), TINY, f"shards={demo_shards}", f"save_path={run}", *pinned_args(),
               "compile=True", "compile_backend=aot_eager"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(re.findall(r"iter \d/3 loss [0-9.]+ ", result.stdout)) == 3
    compiled, eager = final_weights(run)["model"], final_weights(pinned_two_ranks)["model"]
    assert "last_layer.3.weight" in compiled and not any("_orig_mod" in k for k in compiled)
    assert all(torch.allclose(compiled[k].float(), eager[k].float(), rtol=1e-4, atol=1e-5) for k in eager)
