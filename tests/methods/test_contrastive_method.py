"""Contrastive unlearning on real data (digits): class and sample scenarios against the original."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from conun.config import read_yaml
from conun.data.batching import leading_batch, shuffled_batches
from conun.engine import unlearning as engine_unlearning
from conun.engine.stopping import accuracy_band
from conun.evaluation.accuracy import model_outputs
from conun.evaluation.results import RunRecord
from conun.losses import (
    contrastive_unlearning_loss,
    logit_confidence,
    release_contrastive_unlearning_loss,
)
from conun.methods.base import UnlearningBatch
from conun.methods.contrastive import ContrastiveUnlearning
from conun.models import build_model
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import TrainedModel
from digits_runs import run_keeping_model


def test_class_unlearning_forgets_the_class_and_keeps_the_rest(
    digits_run: tuple[Path, TrainedModel],
    run_on_digits: Callable[..., RunRecord],
) -> None:
    unlearn = run_on_digits
    _, trained = digits_run
    original = unlearn(trained, ForgetSpec(classes=(5,)), method="original").metrics
    record = unlearn(trained, ForgetSpec(classes=(5,)))
    metrics = record.metrics
    assert original["forget_test_acc"] > 0.9 and original["forget_train_acc"] > 0.9
    # The rule holds on the held-out (validation) samples of class 5 and, by default, on the
    # forget set (the whole of it here: eval_size 512 > ~130 samples): both at most 1/C.
    assert record.extra["stopped_by"] == "rule"
    assert record.history[-1]["held_out_acc"] <= 0.1
    assert record.history[-1]["forget_train_acc"] == metrics["forget_train_acc"] <= 0.1
    # The test set's class-5 accuracy follows (measured <= 0.11 on seeds 0-4).
    assert metrics["forget_test_acc"] <= 0.2
    assert metrics["retain_test_acc"] >= original["retain_test_acc"] - 0.03
    # The history starts at batch 0 with the original's accuracy and ends where the rule held.
    assert record.history[0]["batch"] == 0 and record.history[0]["forget_train_acc"] > 0.9
    assert record.history[-1]["batch"] == record.forget_batches
    assert record.forget_batches is not None and record.forget_batches > 0


def test_class_rule_on_the_test_set_as_the_paper_does(
    digits_run: tuple[Path, TrainedModel],
    run_on_digits: Callable[..., RunRecord],
) -> None:
    unlearn = run_on_digits
    _, trained = digits_run
    record = unlearn(trained, ForgetSpec(classes=(5,)), stopping={"eval_set": "test"})
    # eval_size (512) covers every class-5 test sample: the rule itself is the test accuracy.
    assert record.extra["stopped_by"] == "rule"
    assert record.metrics["forget_test_acc"] <= 0.1


def test_paper_class_rule_looks_at_held_out_samples_only(
    digits_run: tuple[Path, TrainedModel],
    run_on_digits: Callable[..., RunRecord],
) -> None:
    _, trained = digits_run
    default = run_on_digits(trained, ForgetSpec(classes=(5,)))
    paper = run_on_digits(
        trained, ForgetSpec(classes=(5,)), stopping={"class_checks_forget": False}
    )
    assert paper.extra["stopped_by"] == "rule"
    assert paper.history[-1]["held_out_acc"] <= 0.1
    # Same seed, same batches: the paper's rule stops at the first check where the held-out
    # accuracy is at chance, which is never later than where both are.
    assert paper.forget_batches is not None and default.forget_batches is not None
    assert paper.forget_batches <= default.forget_batches
    checks_before_stop = paper.history[:-1]
    assert all(entry["held_out_acc"] > 0.1 for entry in checks_before_stop)


def test_sample_unlearning_moves_forget_accuracy_to_held_out_level(
    digits_run: tuple[Path, TrainedModel],
    run_on_digits: Callable[..., RunRecord],
) -> None:
    _, trained = digits_run
    spec = ForgetSpec(fraction=0.1)
    record = run_on_digits(trained, spec)
    final = record.history[-1]
    assert record.extra["stopped_by"] == "rule"
    # The default rule (indistinguishable, confidence 0.5): the forget subset's accuracy at
    # most the band's half-width above the held-out subset's.
    split = spec.resolve(trained.data, torch.tensor(trained.meta.validation), 0)
    band = accuracy_band(
        final["forget_train_acc"],
        min(512, split.forget.numel()),
        final["held_out_acc"],
        min(512, split.validation.numel()),
        0.5,
    )
    assert final["forget_train_acc"] <= final["held_out_acc"] + band
    assert final["forget_train_acc"] < record.history[0]["forget_train_acc"]
    assert record.metrics["test_acc"] >= 0.9


def test_check_every_records_a_denser_history(
    digits_run: tuple[Path, TrainedModel], run_on_digits: Callable[..., RunRecord]
) -> None:
    unlearn = run_on_digits
    _, trained = digits_run
    record = unlearn(
        trained,
        ForgetSpec(classes=(2,)),
        stopping={"check_every": 1, "rule": "none", "max_passes": 1},
    )
    assert [h["batch"] for h in record.history] == list(range(record.forget_batches + 1))
    assert record.extra["stopped_by"] == "max_passes"


def test_auto_checks_follow_the_cost_of_a_check(
    digits_run: tuple[Path, TrainedModel], run_on_digits: Callable[..., RunRecord]
) -> None:
    _, trained = digits_run
    spec = ForgetSpec(classes=(2,))
    budget = 0.02
    record = run_on_digits(
        trained,
        spec,
        stopping={"rule": "none", "max_passes": 3, "check_every": "auto", "check_budget": budget},
    )
    # A check evaluates the forget subset and the held-out samples of class 2 (eval_size caps
    # both); a batch trains on omega * (forget + retain) images, ~3 forward passes each.
    split = spec.resolve(trained.data, torch.tensor(trained.meta.validation), 0)
    held_out = int((trained.data.train.labels[split.validation] == 2).sum())
    check_images = min(512, split.forget.numel()) + min(512, held_out)
    batch_images = 4 * (64 + 64)
    every = math.ceil(check_images / (3 * budget * batch_images))
    assert every > 1
    positions = [h["batch"] for h in record.history]
    assert positions == list(range(0, record.forget_batches + 1, every))
    # No check at the end of a pass unless one is due there.
    assert record.forget_batches is not None and record.forget_batches % every != 0


def test_one_forward_pass_over_forget_and_retain() -> None:
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8))
    calls: list[int] = []
    original_forward = model.forward_features

    def counting(x: torch.Tensor):  # type: ignore[no-untyped-def]
        calls.append(x.shape[0])
        return original_forward(x)

    model.forward_features = counting  # type: ignore[method-assign]
    method = ContrastiveUnlearning.for_scenario("sample", {})
    batch = UnlearningBatch(
        torch.randn(4, 1, 8, 8),
        torch.tensor([0, 1, 2, 3]),
        torch.randn(6, 1, 8, 8),
        torch.arange(6),
    )
    terms = method.loss(model, batch)
    assert calls == [10]
    assert set(terms.parts) == {"unlearning", "retain_ce"}
    # sample-scenario defaults: lambda_ul = 3 (the paper's), lambda_ce = 4 (conun's)
    expected = 3.0 * terms.parts["unlearning"] + 4.0 * terms.parts["retain_ce"]
    torch.testing.assert_close(terms.total.detach(), expected)


def test_class_steps_take_the_one_node_objective_with_the_general_paths_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The class default's step computes its objective in one autograd node; the same step
    # through the general path (normalise, slice, L_UL, cross-entropy) must give the same
    # total, logged terms, forget predictions and parameter gradients.
    torch.manual_seed(0)
    # float32, as the method computes its losses (float32 tolerances: the two paths round in
    # another order).
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8))
    method = ContrastiveUnlearning.for_scenario("class", {})
    batch = UnlearningBatch(
        torch.randn(5, 1, 8, 8),
        torch.full((5,), 4),
        torch.randn(9, 1, 8, 8),
        torch.tensor([0, 1, 2, 3, 5, 6, 7, 8, 9]),
    )
    taken = []
    one_node = ContrastiveUnlearning._one_node_class_objective

    def recording(self: ContrastiveUnlearning, num_forget: int, num_retain: int) -> bool:
        taken.append(one_node(self, num_forget, num_retain))
        return taken[-1]

    def step(general: bool) -> tuple[Any, list[torch.Tensor]]:
        with monkeypatch.context() as patch:
            patch.setattr(
                ContrastiveUnlearning,
                "_one_node_class_objective",
                (lambda *_: False) if general else recording,
            )
            model.zero_grad()
            terms = method.loss(model, batch)
            terms.total.backward()
        return terms, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    fused, fused_grads = step(general=False)
    general, general_grads = step(general=True)
    assert taken == [True]
    torch.testing.assert_close(fused.total, general.total)
    assert fused.parts.keys() == general.parts.keys() == {"unlearning", "retain_ce"}
    for name in fused.parts:
        torch.testing.assert_close(fused.parts[name], general.parts[name])
    assert torch.equal(fused.forget_correct, general.forget_correct)
    assert len(fused_grads) == len(general_grads) > 0
    for mine, theirs in zip(fused_grads, general_grads, strict=True):
        torch.testing.assert_close(mine, theirs)
    # The sample scenario and the paper's class options (retain embeddings not detached) keep
    # the general path.
    assert not ContrastiveUnlearning.for_scenario("sample", {})._one_node_class_objective(5, 9)
    paper = ContrastiveUnlearning.for_scenario("class", {"detach_retain": False})
    assert not paper._one_node_class_objective(5, 9)


def test_match_logit_scale_restores_the_originals_held_out_confidence_and_no_prediction(
    digits_run: tuple[Path, TrainedModel],
) -> None:
    # The same seeded sample run with and without the rescaling: identical predictions (every
    # accuracy), and with it the model's mean phi on the held-out samples it was fitted on is
    # the original's.
    _, trained = digits_run
    spec = ForgetSpec(fraction=0.1)
    plain_model, plain, _ = run_keeping_model(trained, spec, "contrastive")
    assert plain.forget_batches is not None and plain.forget_batches > 0
    scaled_model, scaled, method = run_keeping_model(
        trained, spec, "contrastive", options={"match_logit_scale": True}
    )
    assert isinstance(method, ContrastiveUnlearning) and method.logit_scale is not None
    assert method.logit_scale != 1.0
    # results.json says which factor was applied; a run without the option has none.
    assert scaled.extra["logit_scale"] == method.logit_scale
    assert "logit_scale" not in plain.extra
    assert scaled.metrics == plain.metrics
    assert scaled.forget_batches == plain.forget_batches
    validation = torch.tensor(trained.meta.validation)
    images, labels = trained.data.train.images[validation], trained.data.train.labels[validation]
    logits = {
        name: model_outputs(model, images).logits
        for name, model in (
            ("original", trained.model),
            ("plain", plain_model),
            ("scaled", scaled_model),
        )
    }
    # The output layer is scaled: every logit is the plain run's times the factor.
    torch.testing.assert_close(logits["scaled"], logits["plain"] * method.logit_scale)
    # Digits' validation split (~180 samples) is the rule's whole held-out pool here (eval_set
    # validation, eval_size 512), so the factor was fitted on all of it: the mean phi there is
    # the original's again, where unlearning had moved it.
    phi = {name: logit_confidence(value, labels).mean().item() for name, value in logits.items()}
    assert phi["scaled"] == pytest.approx(phi["original"], abs=1e-4)
    assert abs(phi["plain"] - phi["original"]) > 1e-2


def test_match_logit_scale_needs_matched_anchors_and_a_linear_output_layer() -> None:
    with pytest.raises(ValueError, match="match_logit_scale=true needs options.match_held_out"):
        ContrastiveUnlearning.for_scenario(
            "sample", {"match_held_out": False, "match_logit_scale": True}
        )


def test_unknown_options_and_scenarios_are_errors() -> None:
    with pytest.raises(ValueError, match="allowed options: temperature"):
        ContrastiveUnlearning.for_scenario("class", {"temprature": 0.5})
    with pytest.raises(ValueError, match="greater than 0"):
        ContrastiveUnlearning.for_scenario("class", {"temperature": 0})


def test_matched_anchors_are_those_above_their_held_out_quantile() -> None:
    method = ContrastiveUnlearning.for_scenario("sample", {"match_held_out": True})
    assert isinstance(method, ContrastiveUnlearning)
    # Held-out confidences phi = 0.00, 0.01, ..., 0.99: the quantile at level q is ~q.
    method.reference_scores = torch.linspace(0, 0.99, 100)
    # Four anchors of class 0 whose phi (two classes: phi = z_0 - z_1) is 0.05, 0.9, 0.3, 0.2.
    phi = torch.tensor([0.05, 0.9, 0.3, 0.2])
    logits = torch.stack([phi, torch.zeros(4)], dim=1)
    scores, targets = method.matched_anchors(logits, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(scores, phi)
    # Ranks 0, 3, 2, 1 -> levels 0.125, 0.875, 0.625, 0.375 -> targets ~0.124, 0.866, 0.619,
    # 0.371: only the anchor at 0.9 is above its target (still more confident than unseen data).
    assert (scores > targets).tolist() == [False, True, False, False]


def test_neighbour_matching_looks_each_anchor_up_by_its_index() -> None:
    method = ContrastiveUnlearning.for_scenario(
        "sample", {"match_held_out": True, "match_by": "neighbours"}
    )
    assert isinstance(method, ContrastiveUnlearning)
    method.reference_scores = torch.linspace(0, 0.99, 100)
    method.sample_targets = torch.tensor([float("nan"), 0.5, 0.1, float("nan"), 0.95])
    phi = torch.tensor([0.3, 0.3, 0.3])
    logits = torch.stack([phi, torch.zeros(3)], dim=1)
    labels = torch.zeros(3, dtype=torch.long)
    scores, targets = method.matched_anchors(logits, labels, torch.tensor([4, 1, 2]))
    torch.testing.assert_close(targets, torch.tensor([0.95, 0.5, 0.1]))
    assert (scores > targets).tolist() == [False, False, True]
    with pytest.raises(RuntimeError, match="needs the forget batch's indices"):
        method.matched_anchors(logits, labels)


def test_neighbour_matching_forgets_on_digits(
    digits_run: tuple[Path, TrainedModel], run_on_digits: Callable[..., RunRecord]
) -> None:
    _, trained = digits_run
    record = run_on_digits(trained, ForgetSpec(fraction=0.1), options={"match_by": "neighbours"})
    assert record.extra["stopped_by"] == "rule"
    assert record.metrics["forget_train_acc"] < 1.0
    assert record.metrics["test_acc"] >= 0.9


def test_random_matching_gives_each_forget_sample_a_fixed_held_out_score(
    digits_run: tuple[Path, TrainedModel], run_on_digits: Callable[..., RunRecord]
) -> None:
    _, trained = digits_run
    method = ContrastiveUnlearning.for_scenario("sample", {"match_by": "random"})
    assert isinstance(method, ContrastiveUnlearning)
    record = run_on_digits(trained, ForgetSpec(fraction=0.1), options={"match_by": "random"})
    assert record.extra["stopped_by"] == "rule"
    assert record.metrics["forget_train_acc"] < 1.0
    assert record.metrics["test_acc"] >= 0.9


def test_calibration_needs_matching() -> None:
    with pytest.raises(ValueError, match="needs options.match_held_out"):
        ContrastiveUnlearning.for_scenario(
            "sample", {"match_held_out": False, "lambda_calibration": 1.0}
        )


def test_matched_anchors_need_the_sample_scenario(
    digits_run: tuple[Path, TrainedModel], run_on_digits: Callable[..., RunRecord]
) -> None:
    _, trained = digits_run
    with pytest.raises(ValueError, match="sample scenario only"):
        run_on_digits(trained, ForgetSpec(classes=(2,)), options={"match_held_out": True})


def test_the_calibrated_default_reaches_its_rule_in_fewer_steps_than_the_accuracy_rule(
    digits_run: tuple[Path, TrainedModel], run_on_digits: Callable[..., RunRecord]
) -> None:
    _, trained = digits_run
    previous = run_on_digits(
        trained,
        ForgetSpec(fraction=0.1),
        stopping={"sample_rule": "accuracy", "check_every": None, "max_passes": 20},
        options={"omega": 4, "match_held_out": False, "lambda_calibration": 0},
    )
    calibrated = run_on_digits(trained, ForgetSpec(fraction=0.1))
    assert previous.extra["stopped_by"] == calibrated.extra["stopped_by"] == "rule"
    assert previous.forget_batches is not None and calibrated.forget_batches is not None
    # omega 4 then, 1 now: optimizer steps.
    assert calibrated.forget_batches < 4 * previous.forget_batches
    assert calibrated.metrics["test_acc"] >= 0.9


# -- the authors' released code, reproduced option by option -----------------------------------

RELEASE_OPTIONS = {
    "embedding": "relu_normalized",
    "push_weighting": "release",
    "retain_batches": "first_batches",
    "forget_order": "fixed",
}


def test_release_embedding_and_push_weighting_in_the_method_loss() -> None:
    torch.manual_seed(0)
    # The projection-head variant: its embedding has negative coordinates for the ReLU to cut.
    model = build_model("small_cnn_proj", num_classes=10, input_shape=(1, 8, 8)).eval()
    forget_images, retain_images = torch.randn(4, 1, 8, 8), torch.randn(12, 1, 8, 8)
    forget_y, retain_y = torch.tensor([0, 1, 2, 0]), torch.arange(12) % 3
    batch = UnlearningBatch(forget_images, forget_y, retain_images, retain_y)
    features = model.forward_features(torch.cat([forget_images, retain_images])).features
    z = F.normalize(features.float(), dim=1)
    for embedding, embedded in (("normalized", z), ("relu_normalized", F.relu(z))):
        for weighting, loss_fn in (
            ("paper", contrastive_unlearning_loss),
            ("release", release_contrastive_unlearning_loss),
        ):
            method = ContrastiveUnlearning.for_scenario(
                "sample",
                {
                    "embedding": embedding,
                    "push_weighting": weighting,
                    "match_held_out": False,
                    "lambda_calibration": 0.0,
                },
            )
            terms = method.loss(model, batch)
            want = loss_fn(embedded[:4], forget_y, embedded[4:], retain_y)
            torch.testing.assert_close(terms.parts["unlearning"], want.detach())
    # The two options do change the loss (else the comparison above proves nothing).
    assert not torch.allclose(
        release_contrastive_unlearning_loss(z[:4], forget_y, z[4:], retain_y),
        contrastive_unlearning_loss(z[:4], forget_y, z[4:], retain_y),
    )
    assert (z < 0).any()


def test_release_push_weighting_follows_the_scenario_and_refuses_nan_inputs() -> None:
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8)).eval()
    # Anchors of class 9: no same-class retain sample. The release's single_class branch is
    # finite there; its random_sample branch is log 0.
    batch = UnlearningBatch(
        torch.randn(3, 1, 8, 8), torch.full((3,), 9), torch.randn(6, 1, 8, 8), torch.arange(6)
    )
    class_method = ContrastiveUnlearning.for_scenario("class", {"push_weighting": "release"})
    assert torch.isfinite(class_method.loss(model, batch).total)
    sample_method = ContrastiveUnlearning.for_scenario(
        "sample",
        {"push_weighting": "release", "match_held_out": False, "lambda_calibration": 0.0},
    )
    with pytest.raises(ValueError, match="no retain sample of its own class"):
        sample_method.loss(model, batch)
    with pytest.raises(ValueError, match="push_weighting=release cannot be combined"):
        ContrastiveUnlearning.for_scenario("sample", {"push_weighting": "release"})
    with pytest.raises(ValueError, match="forget_order"):
        ContrastiveUnlearning.for_scenario("class", {"forget_order": "random"})


def test_release_loop_visits_forget_in_order_with_the_first_retain_batches(
    digits_run: tuple[Path, TrainedModel],
    run_on_digits: Callable[..., RunRecord],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, trained = digits_run
    spec = ForgetSpec(classes=(5,), split_style="release")
    split = spec.resolve(trained.data, torch.tensor(trained.meta.validation), 0)
    orders: list[list[torch.Tensor]] = []
    retain_calls: list[tuple[int, int, torch.Tensor]] = []

    def spy_order(*args: Any, **kwargs: Any) -> Iterator[torch.Tensor]:
        orders.append(list(shuffled_batches(*args, **kwargs)))
        return iter(orders[-1])

    def spy_leading(indices: torch.Tensor, batch_size: int, step: int, size: int) -> torch.Tensor:
        batch = leading_batch(indices, batch_size, step, size)
        retain_calls.append((step, size, batch))
        return batch

    monkeypatch.setattr(engine_unlearning, "shuffled_batches", spy_order)
    monkeypatch.setattr(engine_unlearning, "leading_batch", spy_leading)
    record = run_on_digits(
        trained,
        spec,
        batch_size=16,
        options={**RELEASE_OPTIONS, "omega": 2, "lambda_ce": 1.0, "detach_retain": False},
        stopping={"rule": "none", "max_passes": 2, "check_every": None},
    )
    assert record.passes == 2
    # Forget batches in index order, the same order on both passes.
    expected = list(torch.split(split.forget, 16))
    assert len(orders) == 2
    for order in orders:
        assert [b.tolist() for b in order] == [b.tolist() for b in expected]
    # Step k of every forget batch: the k-th 16-sample batch of the retain set in index order,
    # cut to the forget batch's size (the last forget batch is shorter).
    assert len(retain_calls) == 2 * 2 * len(expected)
    sizes = [b.numel() for b in expected] * 2
    for call, (step, size, batch) in enumerate(retain_calls):
        assert step == call % 2 and size == sizes[call // 2]
        assert batch.tolist() == split.retain[16 * step : 16 * step + 16][:size].tolist()
    assert sizes[-1] < 16


def test_leading_batch_is_the_loaders_kth_batch_cut_to_size() -> None:
    indices = torch.arange(100, 150)
    assert leading_batch(indices, 16, 1, 16).tolist() == list(range(116, 132))
    assert leading_batch(indices, 16, 3, 5).tolist() == [148, 149]
    with pytest.raises(ValueError, match="lower omega"):
        leading_batch(indices, 16, 4, 16)


@pytest.mark.parametrize("scenario", ["class", "sample"])
def test_paper_and_release_presets_validate_and_say_what_they_are(scenario: str) -> None:
    presets = Path(str(resources.files("conun").joinpath("configs", "unlearn")))
    built = {}
    for kind in ("paper", "release"):
        name = f"contrastive-{kind}-{scenario}.yaml"
        config = resolve_unlearn_config(
            "contrastive", scenario, dataset=None, layers=[(name, read_yaml(presets / name))]
        ).config
        method = ContrastiveUnlearning.for_scenario(scenario, config.options)  # type: ignore[arg-type]
        built[kind] = (config, method.settings)
    paper_options = built["paper"][1]
    release, release_options = built["release"]
    # Both: the authors' hyperparameters.
    for config, options in built.values():
        assert (options.temperature, options.lambda_ul, options.lambda_ce, options.omega) == (
            0.7,
            3.0,
            1.0,
            4,
        )
        assert config.optimizer.lr == 1e-3 and config.optimizer.weight_decay == 0.0
        assert config.batch_size == (64 if scenario == "class" else 128)
        assert config.stopping.eval_set == "test" and config.stopping.check_every is None
    # The paper's equations vs everything the release does.
    assert (
        paper_options.embedding,
        paper_options.push_weighting,
        paper_options.retain_batches,
        paper_options.forget_order,
    ) == ("normalized", "paper", "random", "shuffled")
    assert {key: getattr(release_options, key) for key in RELEASE_OPTIONS} == RELEASE_OPTIONS
    # The release's cadence: after each epoch, on the whole sets, at most 1 / 30 epochs.
    assert release.stopping.eval_size >= 73_257  # SVHN's training set, the largest
    assert release.stopping.max_passes == (1 if scenario == "class" else 30)


def test_frozen_modules_are_left_exactly_as_they_were_and_the_class_is_still_forgotten(
    digits_run: tuple[Path, TrainedModel],
) -> None:
    # small_cnn's first two convolution blocks frozen: their weights and BatchNorm running
    # statistics come out bit for bit the original's, the rest of the network moves, the class
    # is forgotten, and every parameter of the returned model is trainable again.
    _, trained = digits_run
    frozen = ["encoder.0", "encoder.1"]
    model, record, _ = run_keeping_model(
        trained, ForgetSpec(classes=(5,)), "contrastive", options={"frozen_modules": frozen}
    )
    assert record.extra["stopped_by"] == "rule" and record.metrics["forget_train_acc"] <= 0.1
    before, after = trained.model.state_dict(), model.state_dict()
    frozen_keys = [key for key in before if key.startswith(("encoder.0.", "encoder.1."))]
    # conv weight, BN weight/bias/running mean/var/count for each of the two blocks
    assert len(frozen_keys) == 12
    for key in frozen_keys:
        assert torch.equal(before[key], after[key]), key
    for key in ("encoder.2.0.weight", "encoder.5.weight", "head.weight"):
        assert not torch.equal(before[key], after[key]), key
    assert all(parameter.requires_grad for parameter in model.parameters())


def test_unknown_frozen_modules_are_named_with_the_models_modules(
    digits_run: tuple[Path, TrainedModel],
) -> None:
    _, trained = digits_run
    with pytest.raises(ValueError, match="frozen modules hold every parameter"):
        run_keeping_model(
            trained, ForgetSpec(classes=(5,)), "contrastive", options={"frozen_modules": [""]}
        )
    with pytest.raises(
        ValueError, match=r"options.frozen_modules: \['encoder.9'\] not in the model.*'encoder.0'"
    ):
        run_keeping_model(
            trained,
            ForgetSpec(classes=(5,)),
            "contrastive",
            options={"frozen_modules": ["encoder.0", "encoder.9"]},
        )
