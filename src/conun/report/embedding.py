"""The paper's Figure 1 for a bench directory: t-SNE of the representation before and after
unlearning, forget samples highlighted, from the checkpoints the bench left on disk.

Drawn for the first seed and request (a class request first: that is the paper's figure) whose
original checkpoint and at least one of the panel methods' checkpoints are on disk. Bench
weights are not committed, so a bench directory from a clone has none: the report then says so
instead of drawing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from conun.bench.preset import RequestSpec
from conun.config import TrainConfig
from conun.engine.checkpoint import CHECKPOINT_FILE, load_checkpoint, read_checkpoint_meta
from conun.models.base import Classifier
from conun.report.document import Image
from conun.report.figures import figure_png
from conun.viz.embeddings import model_embedding_figure
from conun.workflows.inputs import ensure_dataset, load_training_data

logger = logging.getLogger(__name__)

PANEL_METHODS = ("contrastive", "neggrad", "finetune", "retrain")
"""After-unlearning panels, in order (the paper's Figure 1 compares these)."""

NUM_RETAIN = 1000
"""Retain samples drawn for the projection (the forget samples are capped at half that)."""

TITLE = "Representation before and after unlearning (t-SNE)"
CAPTION = (
    "t-SNE of the L2-normalised features of the same training samples under each model: "
    "retained samples in grey-scale by class, forget samples in red. After contrastive "
    "unlearning the forget samples should leave their class's cluster, as after retraining; "
    "the retained clusters should stay."
)


def embedding_image(
    bench: Path,
    seeds: Sequence[int],
    requests: Mapping[str, Mapping[str, Any]],
    *,
    original_keys: Mapping[int, str],
) -> tuple[Image | None, str]:
    """Figure 1 as an image, or None and the reason it was not drawn.

    Args:
        bench: the bench directory.
        seeds: the recorded seeds, in order.
        requests: request label -> the request as recorded in bench.yaml.
        original_keys: seed -> its directory under ``originals/``.
    """
    ordered = sorted(requests.items(), key=lambda item: item[1].get("class") is None)
    for seed in seeds:
        original = bench / "originals" / str(original_keys.get(seed, "")) / CHECKPOINT_FILE
        if seed not in original_keys or not original.is_file():
            continue
        for label, request in ordered:
            cells = bench / "cells" / str(seed) / label
            available = [m for m in PANEL_METHODS if (cells / m / CHECKPOINT_FILE).is_file()]
            if not available:
                continue
            meta = read_checkpoint_meta(original)
            train_config = TrainConfig.model_validate(meta.train_config)
            try:
                ensure_dataset(train_config)
            except (FileNotFoundError, ValueError) as error:
                return None, f"the dataset is not available here: {error}"
            data = load_training_data(train_config)
            spec = RequestSpec.model_validate(dict(request)).forget_spec()
            validation = torch.tensor(meta.validation, dtype=torch.long)
            split = spec.resolve(data, validation, seed)
            generator = torch.Generator().manual_seed(seed)
            forget = split.forget[torch.randperm(split.forget.numel(), generator=generator)]
            retain = split.retain[torch.randperm(split.retain.numel(), generator=generator)]
            chosen = torch.cat([forget[: NUM_RETAIN // 2], retain[:NUM_RETAIN]])
            is_forget = torch.zeros(chosen.numel(), dtype=torch.bool)
            is_forget[: min(NUM_RETAIN // 2, forget.numel())] = True
            images, labels = data.train.images[chosen], data.train.labels[chosen]
            models: dict[str, Classifier] = {"original": load_checkpoint(original)[0]}
            for method in available:
                models[method] = load_checkpoint(cells / method / CHECKPOINT_FILE)[0]
            perplexity = min(30.0, (chosen.numel() - 1) / 3)
            figure = model_embedding_figure(
                models, images, labels, is_forget, seed=seed, perplexity=perplexity
            )
            caption = f"{CAPTION} Seed {seed}, request {label}."
            return Image("embedding_projection", TITLE, caption, figure_png(figure)), ""
    return None, (
        "no seed has its original's and a method's checkpoint on disk (bench weights are not "
        "committed; rerun the bench here to draw it)"
    )


__all__ = ["PANEL_METHODS", "embedding_image"]
