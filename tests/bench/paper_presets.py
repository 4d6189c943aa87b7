"""Every paper-protocol preset runs its whole grid to a table, on synthetic data in the real file
formats, so that the first run on a GPU machine with the real data cannot fail on wiring
(test_paper_presets_<dataset>.py, one file per dataset so that the suite's workers share them).

What each run keeps from its preset: the dataset and its loader (CIFAR-10's Python batches,
SVHN's .mat files, Mini-ImageNet's JPEG folders, at full image size), the model architecture
(depth, blocks, heads, patch size), the training recipe but its length, the requests, every
method of every request, the audit, the tables. What it changes, for a 2-core CPU: a few hundred
images (Mini-ImageNet's resized to 24x24); 50 random samples to forget instead of 500; one seed;
one epoch; the models narrow (ResNets ``width: 4`` instead of 64, the ViT ``embed_dim: 24``
instead of 384); and at most one pass or a handful of steps for the methods with long schedules
of their own (``SHORT_SCHEDULES``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conun.bench import available_presets, load_bench_preset, run_bench
from conun.bench.preset import BenchPreset
from conun.config import build_train_config
from conun.evaluation.results import validate_results
from synthetic_datasets import torchvision_md5_skipped

PAPER_PRESETS = sorted(name for name in available_presets() if name.startswith("paper-"))


def presets_of(dataset: str) -> list[str]:
    """The paper presets on ``dataset``."""
    return [name for name in PAPER_PRESETS if load_bench_preset(name).dataset == dataset]


# Each method's longest schedule, cut for the CPU (their presets' values in the comments).
SHORT_SCHEDULES: dict[str, dict[str, Any]] = {
    "lcodec": {"options": {"perturbations": 8, "hessian_samples": 8,  # 1000, 256
                           "solver_max_iterations": 5}},  # 1000
    "fisher": {"options": {"max_samples": 32}},  # 5000
    "unsir": {"options": {"noise_steps": 2, "noise_repeats": 1,  # 40, 20
                          "retain_per_class": 8}},  # 1000
    "scrub": {"options": {"epochs": 1}},  # 3
}  # fmt: skip


def narrowed(preset: BenchPreset) -> BenchPreset:
    """``preset`` cut to a CPU test's size (module docstring): only sizes and lengths change."""
    vit = preset.train_preset == "mini-imagenet-vit"
    model_args: dict[str, Any] = {"embed_dim": 24} if vit else {"width": 4}
    sizes: dict[str, Any] = {}
    if preset.dataset == "mini-imagenet":
        # The 84x84 JPEGs are decoded and resized to 24x24 (the ViT keeps its 12-pixel patches):
        # 12x fewer pixels. (Narrow ResNet-18s on 84x84 channels-last images also crash torch
        # 2.14's CPU backward, at widths 4 and 8; 16 and up, and 32x32 images, do not.)
        sizes = {"image_size": 24}
        if vit:
            model_args["img_size"] = 24
    requests = [
        request.model_copy(update={"samples": 50}) if request.samples else request
        for request in preset.requests
    ]
    return preset.model_copy(
        update={
            "requests": requests,
            "train": {**preset.train, "epochs": 1, "model_args": model_args, **sizes},
            "unlearn": {**preset.unlearn, "stopping": {"max_passes": 1}},
            "unlearn_per_method": SHORT_SCHEDULES,
            "seeds": [0],
        }
    )


def check_preset_runs_to_a_table(
    name: str, data: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run preset ``name``, :func:`narrowed`, on the data under ``data`` into ``out``, and check
    that every cell of the preset ran, audited, under its dataset and model, into the table."""
    monkeypatch.setenv("CONUN_DATA", str(data))
    preset = load_bench_preset(name)
    small = narrowed(preset)
    # The preset's model, or its train preset's (what a GPU run of the preset would train).
    model = preset.model or build_train_config(preset.dataset, preset=preset.train_preset).model
    with torchvision_md5_skipped():
        report = run_bench(small, out=out, quiet=True)
    assert not report.failed

    # Every cell of the preset ran (nothing failed), under the preset's model and dataset.
    planned = {
        (request.label, method)
        for request in small.requests
        for method in (request.methods or small.methods)
    }
    assert {method for _, method in planned} == {
        method for request in preset.requests for method in (request.methods or preset.methods)
    }
    cells = sorted(out.glob("cells/0/*/*/results.json"))
    assert {(path.parent.parent.name, path.parent.name) for path in cells} == planned
    for path in cells:
        document = json.loads(path.read_text())
        validate_results(document)
        (run,) = document["runs"]
        assert document["dataset"] == preset.dataset
        assert document["model"] == model
        # The audit the preset asks for: the membership attacks, and distances to retrain.
        assert "mia_forget_member_rate" in run["metrics"]
        if run["method"] not in ("original", "retrain"):
            assert "js_divergence" in run["metrics"]
    table = (out / "table.md").read_text()
    for _, method in planned:
        assert f"| {method} " in table
