"""Data parallelism with 2 gloo processes on the CPU: the pieces are exact (sharding, gathered
predictions, the global contrastive loss's gradient), and torchrun runs of train + unlearn give
the metrics of one process within a stated tolerance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conun.data.batching import shuffled_batches
from conun.distributed.group import average_gradients, context, gather_rows, shard
from conun.evaluation.accuracy import predict
from conun.evaluation.results import RESULTS_FILE
from conun.methods.base import UnlearningBatch
from conun.methods.contrastive import ContrastiveUnlearning
from conun.models.registry import build_model
from conun.workflows.configs import resolve_unlearn_config

WORLD = 2


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=4, input_shape=(1, 8, 8))
    # Eval-mode BatchNorm (running statistics): each sample's output is its own, so a shard's
    # loss terms are exactly the whole batch's. BatchNorm in training mode is the one thing
    # that differs between N processes and one (see the end-to-end test).
    return model.eval()


def _batch() -> UnlearningBatch:
    generator = torch.Generator().manual_seed(1)
    return UnlearningBatch(
        torch.randn(10, 1, 8, 8, generator=generator),
        torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1]),
        torch.randn(13, 1, 8, 8, generator=generator),  # odd: unequal shares
        torch.randint(0, 4, (13,), generator=generator),
    )


def _gradients(
    model: torch.nn.Module, method: ContrastiveUnlearning, batch: UnlearningBatch
) -> list[torch.Tensor]:
    model.zero_grad()
    method.loss(model, batch).total.backward()  # type: ignore[arg-type]
    average_gradients(list(model.parameters()))
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]  # type: ignore[union-attr]


def _worker(rank: int, init_file: str, results: dict[int, dict[str, object]]) -> None:
    torch.set_num_threads(1)
    model = _model()
    batch = _batch()
    config = resolve_unlearn_config("contrastive", "sample", dataset=None).config
    options = {**config.options, "distributed_loss": "global", "detach_retain": False}
    method = ContrastiveUnlearning.for_scenario("sample", options)
    assert isinstance(method, ContrastiveUnlearning)
    # One process over the whole batch, before joining the group.
    reference = _gradients(model, method, batch)
    images = torch.randn(101, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    reference_predictions = predict(model, images, batch_size=16)  # type: ignore[arg-type]

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        assert context().world_size == WORLD and context().rank == rank
        forget = shard(torch.arange(10))
        retain = shard(torch.arange(13))
        local = UnlearningBatch(
            batch.forget_images[forget],  # type: ignore[index]
            batch.forget_labels[forget],  # type: ignore[index]
            batch.retain_images[retain],  # type: ignore[index]
            batch.retain_labels[retain],  # type: ignore[index]
        )
        distributed = _gradients(model, method, local)
        local_method = ContrastiveUnlearning.for_scenario(
            "sample", {**options, "distributed_loss": "local"}
        )
        assert isinstance(local_method, ContrastiveUnlearning)
        per_rank = _gradients(model, local_method, local)
        gathered = gather_rows(shard(torch.arange(101)) * 10, 101)
        outcome = {
            "shares": [int(forget.numel()), int(retain.numel())],
            "global_error": max(
                float((a - b).abs().max() / (b.abs().max() + 1e-12))
                for a, b in zip(distributed, reference, strict=True)
            ),
            "local_error": max(
                float((a - b).abs().max() / (b.abs().max() + 1e-12))
                for a, b in zip(per_rank, reference, strict=True)
            ),
            "predictions_equal": bool(
                torch.equal(predict(model, images, batch_size=16), reference_predictions)  # type: ignore[arg-type]
            ),
            "gathered_equal": bool(torch.equal(gathered, torch.arange(101) * 10)),
            "last_batch_min": min(
                b.numel()
                for b in shuffled_batches(
                    torch.arange(129), 64, generator=torch.Generator(), min_last=2 * WORLD
                )
            ),
        }
        results[rank] = outcome
    finally:
        dist.destroy_process_group()


def test_sharding_gathering_and_the_global_contrastive_gradient_are_exact(tmp_path: Path) -> None:
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(str(tmp_path / "init"), results), nprocs=WORLD, join=True)
    assert sorted(results.keys()) == [0, 1]
    # Contiguous shares differing by at most one sample: 5 + 5 forget, 7 + 6 retain.
    assert [results[rank]["shares"] for rank in range(WORLD)] == [[5, 7], [5, 6]]
    for rank in range(WORLD):
        outcome = results[rank]
        # global: the gradient of one process on the whole batch, to float32 rounding.
        assert outcome["global_error"] < 1e-5, outcome
        # local (the default): each anchor sees its own process's retain samples only, which
        # is a different objective (the reason the option exists).
        assert outcome["local_error"] > 1e-3, outcome
        assert outcome["predictions_equal"] and outcome["gathered_equal"]
        assert outcome["last_batch_min"] >= 2 * WORLD  # 129 = 64 + 65, not 64 + 64 + 1


def _conun(*args: str, ranks: int) -> None:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    if ranks == 1:
        command = [sys.executable, "-m", "conun", *args]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={ranks}",
            "-m",
            "conun",
            *args,
        ]
    subprocess.run(command, env=environment, check=True, capture_output=True)


def _metrics(directory: Path, method: str) -> dict[str, float]:
    runs = json.loads((directory / RESULTS_FILE).read_text())["runs"]
    return next(run["metrics"] for run in runs if run["method"] == method)


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """A digits original trained by 1 process and by 2 (15 epochs), written once per module."""
    found = {}
    for ranks in (1, WORLD):
        out = tmp_path_factory.mktemp(f"original-{ranks}")
        _conun(
            "train",
            "--dataset",
            "digits",
            "--epochs",
            "15",
            "--quiet",
            "--out",
            str(out),
            ranks=ranks,
        )
        found[ranks] = out
    return found


def test_torchrun_training_matches_one_process(originals: dict[int, Path]) -> None:
    """Tolerance 0.03 (11 of the 360 test images): the two runs draw the same batches in the same
    order and differ only by BatchNorm normalising each process's half-batch with its own
    statistics and by the order of float sums, which moves the weights like a change of seed
    does (this recipe's test accuracy spreads over about 2 points across digits seeds 0-4)."""
    one, many = (_metrics(originals[ranks], "original") for ranks in (1, WORLD))
    for key in ("test_acc", "retain_train_acc"):
        assert abs(one[key] - many[key]) <= 0.03, (key, one, many)


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("contrastive", ["options.distributed_loss=local"]),
        ("contrastive", ["options.distributed_loss=global"]),
        # scrub also runs sharded, but its few max-steps (4 on a digits class) move the student
        # through BatchNorm's per-batch statistics, which differ per process: measured 10% vs
        # 0% forget accuracy from one original, so it is not held to this tolerance.
        ("unsir", []),  # its own loop: impair then repair on noise + a retain subset
    ],
)
def test_torchrun_unlearning_matches_one_process(
    originals: dict[int, Path], tmp_path: Path, method: str, options: list[str]
) -> None:
    """2 gloo processes vs 1 on digits, class 5, each from the original trained with as many
    processes. Tolerance: as for training, plus the forgotten class must reach chance (1/C) in
    both runs (where a run stops is discrete: the rule is checked after each pass over ~130
    samples)."""
    results = {}
    for ranks in (1, WORLD):
        out = tmp_path / f"{method}-{ranks}"
        overrides = [item for option in options for item in ("--set", option)]
        _conun(
            "unlearn",
            "--checkpoint",
            str(originals[ranks]),
            "--method",
            method,
            "--forget-class",
            "5",
            *overrides,
            "--quiet",
            "--out",
            str(out),
            ranks=ranks,
        )
        results[ranks] = _metrics(out, method)
    one, many = results[1], results[WORLD]
    for key in ("test_acc", "retain_train_acc", "retain_test_acc"):
        assert abs(one[key] - many[key]) <= 0.03, (key, one, many)
    for metrics in (one, many):
        assert metrics["forget_train_acc"] <= 0.1 and metrics["forget_test_acc"] <= 0.1, metrics


def test_torchrun_evaluation_is_exactly_one_process(
    originals: dict[int, Path], tmp_path: Path
) -> None:
    """Evaluation shares the images between processes and gathers the predictions: the same
    accuracies as one process to the last digit (nothing padded or counted twice; 1,437
    training images give shares of 719 and 718)."""
    results = {}
    for ranks in (1, WORLD):
        out = tmp_path / f"evaluate-{ranks}"
        _conun(
            "evaluate",
            "--checkpoint",
            str(originals[1]),
            "--forget-samples",
            "37",
            "--quiet",
            "--out",
            str(out),
            ranks=ranks,
        )
        results[ranks] = _metrics(out, "original")
    assert results[1] == results[WORLD]
