"""The authors' released code's split quirks as ``split_style="release"``."""

from __future__ import annotations

import jsonschema
import pytest
import torch

from conun.data.splits import ForgetRequestError, ForgetRetainSplit
from conun.evaluation.results import results_schema
from conun.io import sha256_json
from conun.workflows.requests import ForgetSpec


def test_release_class_split_keeps_the_class_last_sample_in_retain() -> None:
    labels = torch.tensor([0, 1, 2, 1, 0, 1, 2, 1])
    validation = torch.tensor([7])
    conun = ForgetRetainSplit.from_classes(labels, [1], num_classes=3, validation=validation)
    release = ForgetRetainSplit.from_classes(
        labels, [1], num_classes=3, validation=validation, style="release"
    )
    assert conun.forget.tolist() == [1, 3, 5]
    # The release's unlearn_idx[:-1]: the last (non-validation) class-1 sample is retained.
    assert release.forget.tolist() == [1, 3]
    assert release.retain.tolist() == [0, 2, 4, 5, 6]
    assert release.validation.tolist() == [7]
    with pytest.raises(ForgetRequestError, match="one class"):
        ForgetRetainSplit.from_classes(labels, [1, 2], num_classes=3, style="release")


def test_release_sample_split_takes_the_first_indices() -> None:
    validation = torch.tensor([1, 4])
    split = ForgetRetainSplit.from_leading(10, num_samples=3, validation=validation)
    assert split.forget.tolist() == [0, 2, 3]
    assert split.retain.tolist() == [5, 6, 7, 8, 9]
    # results.json records the request without a seed (none drew it), and stays valid.
    assert split.request() == {"num_samples": 3}
    forget_schema = results_schema()["properties"]["runs"]["items"]["properties"]["forget"]
    jsonschema.validate(split.request(), forget_schema)
    with pytest.raises(ForgetRequestError, match="cannot forget 8 samples"):
        ForgetRetainSplit.from_leading(10, num_samples=8, validation=validation)


def test_split_style_on_the_request_and_its_digest() -> None:
    default = ForgetSpec(num_samples=500)
    # The default's digest is the one written before split styles existed (fingerprints and
    # resumed runs stay valid).
    old_fields = {"classes": (), "num_samples": 500, "fraction": None, "ids_file": None}
    assert default.digest() == sha256_json(old_fields)
    assert ForgetSpec(num_samples=500, split_style="release").digest() != default.digest()
    with pytest.raises(ForgetRequestError, match="not to an ids file"):
        ForgetSpec(ids_file="ids.txt", split_style="release")
    with pytest.raises(ForgetRequestError, match="split_style must be"):
        ForgetSpec(num_samples=5, split_style="paper")  # type: ignore[arg-type]
