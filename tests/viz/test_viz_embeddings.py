"""Tests of conun.viz.embeddings (the paper's Figure 1) on a tiny model and 100 digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conun.data import load_dataset
from conun.models import Classifier, build_model
from conun.viz import (
    embedding_projection,
    embedding_projection_figure,
    extract_features,
    project_features,
)

NUM_SAMPLES = 100
FORGET_CLASS = 3


@pytest.fixture(scope="module")
def samples() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """100 digits: images (N, 1, 8, 8), labels (N,), forget mask (N,) for one class."""
    data = load_dataset("digits")
    images = data.train.images[:NUM_SAMPLES]
    labels = data.train.labels[:NUM_SAMPLES]
    return images, labels, (labels == FORGET_CLASS).numpy()


@pytest.fixture(scope="module")
def models() -> dict[str, Classifier]:
    """Two untrained small_cnn models with different weights (stand-ins for before/after)."""
    built = {}
    for seed, name in enumerate(("before", "after")):
        torch.manual_seed(seed)
        built[name] = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8))
    return built


def test_extract_features_matches_the_model(
    models: dict[str, Classifier], samples: tuple[torch.Tensor, torch.Tensor, np.ndarray]
) -> None:
    images, _, _ = samples
    model = models["before"]
    assert model.training
    features = extract_features(model, images, batch_size=32)
    assert features.shape == (NUM_SAMPLES, model.feature_dim)
    assert features.dtype == np.float64
    assert model.training  # the mode is restored
    model.eval()
    with torch.no_grad():
        expected = model.features(images).numpy()
    model.train()
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)


def test_projection_is_deterministic_and_drawn_as_given(
    models: dict[str, Classifier], samples: tuple[torch.Tensor, torch.Tensor, np.ndarray]
) -> None:
    images, labels, is_forget = samples
    features = {name: extract_features(model, images) for name, model in models.items()}
    projections = project_features(features, seed=0, perplexity=20.0)
    again = project_features({"before": features["before"]}, seed=0, perplexity=20.0)
    assert list(projections) == ["before", "after"]
    assert projections["before"].shape == (NUM_SAMPLES, 2)
    np.testing.assert_array_equal(projections["before"], again["before"])

    figure = embedding_projection_figure(projections, labels, is_forget)
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["before", "after"]
    for ax in panels:
        coordinates = projections[ax.get_title()]
        retain, forget = ax.collections
        assert retain.get_label() == "retain" and forget.get_label() == "forget"
        np.testing.assert_allclose(np.asarray(retain.get_offsets()), coordinates[~is_forget])
        np.testing.assert_allclose(np.asarray(forget.get_offsets()), coordinates[is_forget])


def test_embedding_projection_writes_png_and_pdf(
    models: dict[str, Classifier],
    samples: tuple[torch.Tensor, torch.Tensor, np.ndarray],
    tmp_path: Path,
) -> None:
    images, labels, is_forget = samples
    paths = embedding_projection(
        models, images, labels, torch.from_numpy(is_forget), tmp_path / "tsne", seed=0
    )
    assert paths.png == tmp_path / "tsne.png" and paths.pdf == tmp_path / "tsne.pdf"
    assert paths.png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert paths.pdf.read_bytes().startswith(b"%PDF")
    assert paths.png.stat().st_size > 1000 and paths.pdf.stat().st_size > 1000


def test_embedding_projection_rejects_bad_input(
    models: dict[str, Classifier],
    samples: tuple[torch.Tensor, torch.Tensor, np.ndarray],
    tmp_path: Path,
) -> None:
    images, labels, is_forget = samples
    out = tmp_path / "tsne"
    with pytest.raises(ValueError, match="boolean"):
        embedding_projection(models, images, labels, is_forget.astype(int), out, seed=0)
    with pytest.raises(ValueError, match="no sample"):
        embedding_projection(models, images, labels, np.zeros_like(is_forget), out, seed=0)
    with pytest.raises(ValueError, match="N = 100"):
        embedding_projection(models, images, labels[:50], is_forget[:50], out, seed=0)
    with pytest.raises(ValueError, match="perplexity"):
        embedding_projection(models, images, labels, is_forget, out, seed=0, perplexity=100)
    with pytest.raises(ValueError, match="no models"):
        embedding_projection({}, images, labels, is_forget, out, seed=0)
    assert not list(tmp_path.iterdir())
