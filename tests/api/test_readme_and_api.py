"""The README's Python example runs as written, and the API works on a user's own nn.Module."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import conun
from conun.engine.training import NonFiniteLossError
from conun.evaluation.privacy import AUDIT_COLUMNS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "the README has no Python example"
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "class-3 test accuracy:" in printed
    forgotten = float(printed.rsplit("class-3 test accuracy:", 1)[1].split()[0])
    result = namespace["result"]
    assert isinstance(result, conun.UnlearnResult) and result.stopped_by == "rule"
    # The rule held on the held-out class-3 samples (at most 1/C) ...
    assert result.history[-1]["held_out_acc"] <= 0.1
    # ... and the class collapsed on the test set too (from ~98%; the held-out set is small).
    assert forgotten <= 0.35


def test_unlearn_wraps_a_torchvision_model_by_its_head() -> None:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=4)
    images = torch.randn(48, 3, 32, 32)
    labels = torch.arange(4).repeat(12)
    before = [p.detach().clone() for p in net.parameters()]
    result = conun.unlearn(
        net,
        forget=(images[:8], labels[:8]),
        retain=(images[8:], labels[8:]),
        head="fc",
        stop=False,
        max_passes=1,
        batch_size=8,
        options={"omega": 2},
    )
    assert result.forget_batches == 1 and result.stopped_by == "max_passes"
    # The user's own module, not conun's wrapper, comes back holding the unlearned weights.
    assert result.model is net
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    # Without held_out there is no held-out accuracy to report.
    assert set(result.metrics) == {"forget_train_acc", "retain_train_acc"}
    assert result.audit is None


class _Pairs(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """``n`` random 1x8x8 images labelled ``(i + offset) % 3``."""

    def __init__(self, n: int, offset: int) -> None:
        self.images = torch.randn(n, 1, 8, 8)
        self.offset = offset

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], (i + self.offset) % 3


def test_unlearn_accepts_a_torch_dataset_and_rejects_bad_input() -> None:
    Pairs = _Pairs
    model = conun.models.build_model("small_cnn", num_classes=3, input_shape=(1, 8, 8))
    result = conun.unlearn(model, Pairs(6, 0), Pairs(30, 1), stop=False, max_passes=2)
    assert result.passes == 2
    with pytest.raises(ValueError, match="held_out"):
        conun.unlearn(model, Pairs(6, 0), Pairs(30, 1))
    with pytest.raises(ValueError, match="share one"):
        conun.unlearn(
            model,
            (torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)),
            (torch.randn(4, 1, 9, 9), torch.ones(4, dtype=torch.long)),
            stop=False,
        )
    with pytest.raises(ValueError, match="registered: "):
        conun.unlearn(model, Pairs(6, 0), Pairs(30, 1), method="magic", stop=False)
    with pytest.raises(ValueError, match="head"):
        conun.unlearn(
            nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), Pairs(6, 0), Pairs(30, 1), stop=False
        )


def test_unlearn_audit_options_and_the_callers_model() -> None:
    torch.manual_seed(0)
    model = conun.models.build_model("small_cnn", num_classes=3, input_shape=(1, 8, 8))
    forget, retain, held_out = _Pairs(12, 0), _Pairs(40, 1), _Pairs(30, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = conun.unlearn(
        model,
        forget,
        retain,
        held_out=held_out,
        options={"temperature": 0.5},
        audit=True,
        stop=False,
        max_passes=2,
    )
    assert result.model is model and result.stopped_by == "max_passes"
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # The forget labels occur in retain: the sample scenario, accuracies on every part.
    assert set(result.metrics) == {"forget_train_acc", "retain_train_acc", "test_acc"}
    assert result.audit is not None
    assert set(result.audit) == set(AUDIT_COLUMNS)
    assert 0.0 <= result.audit["mia_forget_member_rate"] <= 1.0
    # The audit is seeded: the same call gives the same numbers.
    model.load_state_dict(before)
    again = conun.unlearn(
        model,
        forget,
        retain,
        held_out=held_out,
        options={"temperature": 0.5},
        audit=True,
        stop=False,
        max_passes=2,
    )
    assert again.audit == result.audit and again.metrics == result.metrics

    with pytest.raises(ValueError, match="audit needs held_out"):
        conun.unlearn(model, forget, retain, audit=True, stop=False)
    # Options are the method's alone: the API's own arguments are not options.
    with pytest.raises(ValueError, match="allowed options"):
        conun.unlearn(model, forget, retain, options={"seed": 3}, stop=False)


def test_a_one_shot_method_is_done_and_a_failed_run_leaves_the_model() -> None:
    torch.manual_seed(0)
    model = conun.models.build_model("small_cnn", num_classes=3, input_shape=(1, 8, 8))
    forget, retain = _Pairs(12, 0), _Pairs(40, 1)
    result = conun.unlearn(model, forget, retain, "ssd", stop=False)
    assert result.model is model and result.stopped_by == "done"
    assert result.forget_batches is None and result.passes is None

    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NonFiniteLossError):
        conun.unlearn(model, forget, retain, lr=1e30, stop=False, max_passes=3)
    # The method ran on a copy: the weights only reach the caller's model on success.
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
