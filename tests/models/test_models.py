"""Tests of conun.models: the registry, the built-in models and wrap_model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from conun.models import registry
from conun.models.base import Classifier
from conun.models.registry import UnknownModelError, available_models, build_model, register_model
from conun.models.wrap import WrappedClassifier, wrap_model

BUILTIN = {
    "small_cnn",
    "small_cnn_proj",
    *(f"resnet{depth}{suffix}" for depth in (18, 34, 50, 101) for suffix in ("", "_proj")),
}

# (model, input shape) pairs each model is meant for. The deep resnets run once, on a tiny
# input, because they are slow to push through on a 2-core CPU and their code path is the same.
CASES = [
    *(
        (name, shape)
        for name in ("small_cnn", "small_cnn_proj")
        for shape in ((1, 8, 8), (1, 28, 28), (3, 32, 32))
    ),
    *(
        (name, shape)
        for name in ("resnet18", "resnet18_proj", "resnet34", "resnet34_proj")
        for shape in ((3, 32, 32), (1, 28, 28))
    ),
    *((name, (3, 8, 8)) for name in ("resnet50", "resnet50_proj", "resnet101", "resnet101_proj")),
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Two intra-op threads on a 2-core machine are 10x slower, not 2x faster, as soon as
    # anything else runs (OpenMP threads spin-wait on each other); these tests are tiny anyway.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_registry_lists_the_builtin_models() -> None:
    assert set(available_models()) >= BUILTIN
    assert available_models() == sorted(available_models())


@pytest.mark.parametrize(
    ("name", "shape"), CASES, ids=[f"{n}-{'x'.join(map(str, s))}" for n, s in CASES]
)
def test_model_shapes_consistency_and_gradients(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, input_shape=shape)
    assert isinstance(model, Classifier)
    assert model.num_classes == 7
    x = torch.randn(2, *shape)

    out = model.forward_features(x)
    assert out.features.shape == (2, model.feature_dim)
    assert out.logits.shape == (2, 7)
    if name.endswith("_proj"):
        assert model.feature_dim == 128
        torch.testing.assert_close(out.features.norm(dim=1), torch.ones(2))
    else:
        assert model.feature_dim == {"small_cnn": 128, "resnet18": 512, "resnet34": 512}.get(
            name, 2048
        )

    F.cross_entropy(out.logits, torch.tensor([0, 6])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    # Eval mode: batch-norm uses running statistics, so two passes must agree exactly.
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.classify(model.features(x)))


def test_small_cnn_channels_last_gives_the_same_outputs() -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 28, 28)).eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        actual = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["small_cnn", "resnet18_proj"])
def test_same_seed_gives_identical_weights(name: str) -> None:
    def weights(seed: int) -> dict[str, Tensor]:
        torch.manual_seed(seed)
        return build_model(name, num_classes=10, input_shape=(3, 32, 32)).state_dict()

    first, second, other = weights(0), weights(0), weights(1)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize(
    "name, expansion, blocks",
    [("resnet18", 1, [2, 2, 2, 2]), ("resnet34_proj", 1, [3, 4, 6, 3]),
     ("resnet50", 4, [3, 4, 6, 3]), ("resnet101_proj", 4, [3, 4, 23, 3])],
)  # fmt: skip
def test_resnet_width_scales_every_stage_and_keeps_the_depth(
    name: str, expansion: int, blocks: list[int]
) -> None:
    model = build_model(name, num_classes=10, input_shape=(3, 8, 8), model_args={"width": 4})
    encoder = model.encoder  # type: ignore[attr-defined]
    assert encoder.conv1.out_channels == 4
    for stage, count in enumerate(blocks):
        layer = getattr(encoder, f"layer{stage + 1}")
        assert len(layer) == count
        assert layer[-1].conv1.in_channels == 4 * 2**stage * expansion
    # Built on a full-width skeleton on the meta device: nothing of it may be left there.
    assert not any(t.is_meta for t in model.state_dict().values())
    out = model.forward_features(torch.randn(2, 3, 8, 8))
    assert out.logits.shape == (2, 10)
    assert out.features.shape[1] == (128 if name.endswith("_proj") else 8 * 4 * expansion)
    torch.manual_seed(0)
    default = build_model(name, num_classes=10, input_shape=(3, 8, 8))
    torch.manual_seed(0)
    wide = build_model(name, num_classes=10, input_shape=(3, 8, 8), model_args={"width": 64})
    # width 64 is the paper's model, built exactly as before the option existed.
    assert all(
        torch.equal(a, b)
        for a, b in zip(default.state_dict().values(), wide.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize(
    "args, match",
    [({"width": 0}, "width must be an integer >= 1"), ({"width": 2.5}, "got 2.5"),
     ({"depth": 3}, "takes no model_args depth; it takes width")],
)  # fmt: skip
def test_resnet_model_args_are_checked(args: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_model("resnet18", num_classes=10, input_shape=(3, 32, 32), model_args=args)


def test_unknown_model_names_the_registered_ones() -> None:
    with pytest.raises(UnknownModelError) as info:
        build_model("resnet19", num_classes=10, input_shape=(3, 32, 32))
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "resnet19" in message
    assert all(name in message for name in BUILTIN)


@pytest.mark.parametrize("num_classes", [1, 0, -3, True, 2.5])
def test_bad_num_classes(num_classes: int) -> None:
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        build_model("small_cnn", num_classes=num_classes, input_shape=(1, 28, 28))


@pytest.mark.parametrize(
    ("name", "shape", "match"),
    [
        ("small_cnn", (1, 4, 28), r"at least 8x8"),
        ("resnet18", (3, 7, 7), r"at least 8x8"),
        ("small_cnn", (28, 28), r"\(C, H, W\)"),
        ("small_cnn", 28, r"\(C, H, W\)"),
        ("small_cnn", (1, 28.0, 28), r"\(C, H, W\)"),
        ("small_cnn", (0, 28, 28), r"channels must be >= 1"),
    ],
)
def test_bad_input_shape(name: str, shape: tuple[int, int, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_model(name, num_classes=10, input_shape=shape)


def test_register_model_adds_a_model_and_refuses_duplicates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "MODELS", dict(registry.MODELS))

    @register_model("tiny_test_net", min_size=2)
    def tiny(*, num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
        """A throwaway model."""
        return wrap_model(
            nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0] * 4, num_classes)), head="1"
        )

    assert "tiny_test_net" in available_models()
    assert registry.MODELS["tiny_test_net"].description == "A throwaway model."
    model = build_model("tiny_test_net", num_classes=3, input_shape=(1, 2, 2))
    assert model(torch.randn(5, 1, 2, 2)).shape == (5, 3)
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny_test_net")(tiny)


@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "resnet18_proj"])
def test_a_few_sgd_steps_reduce_the_loss(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=4, input_shape=(3, 16, 16))
    x, y = torch.randn(16, 3, 16, 16), torch.arange(16) % 4
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # The projection variant learns slowest (its logits start small: a linear layer on unit
    # vectors), but steadily; 10% in 8 steps separates learning from noise for all three.
    assert losses[-1] < 0.9 * losses[0], losses


# ---- wrap_model ------------------------------------------------------------------------------


def _torchvision_resnet() -> torchvision.models.ResNet:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def test_wrap_torchvision_resnet_gives_the_modules_logits() -> None:
    module = _torchvision_resnet()
    model = wrap_model(module, head="fc")
    assert isinstance(model, Classifier)
    assert (model.feature_dim, model.num_classes) == (512, 10)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = module(x)
        out = model.forward_features(x)
        assert out.features.shape == (2, 512)
        torch.testing.assert_close(out.logits, expected)
        torch.testing.assert_close(model(x), expected)
        # The head is back in place: the user's own module still returns logits.
        assert isinstance(module.fc, nn.Linear)
        torch.testing.assert_close(module(x), expected)


def test_wrap_shares_parameters_with_the_module() -> None:
    module = _torchvision_resnet().train()
    model = wrap_model(module, head="fc")
    assert {id(p) for p in model.parameters()} == {id(p) for p in module.parameters()}
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    F.cross_entropy(model(torch.randn(2, 3, 16, 16)), torch.tensor([1, 2])).backward()
    optimizer.step()
    for n in ("conv1.weight", "fc.weight"):
        assert not torch.equal(before[n], module.get_parameter(n))


def test_wrap_state_dict_round_trips() -> None:
    module = _torchvision_resnet()
    model = wrap_model(module, head="fc")
    state = model.state_dict()
    assert set(state) == {f"module.{k}" for k in module.state_dict()}

    torch.manual_seed(1)
    fresh = torchvision.models.resnet18(num_classes=10).eval()
    wrap_model(fresh, head="fc").load_state_dict(state)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), module(x))


def test_wrap_dotted_head_and_non_linear_head() -> None:
    torch.manual_seed(0)
    # A VGG-shaped module: the head is the last layer of a nested "classifier".
    module = nn.Sequential()
    module.add_module("features", nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten()))
    module.add_module("classifier", nn.Sequential(nn.Linear(144, 8), nn.ReLU(), nn.Linear(8, 3)))
    model = wrap_model(module, head="classifier.2")
    x = torch.randn(5, 1, 8, 8)
    assert (model.feature_dim, model.num_classes) == (8, 3)
    assert model.features(x).shape == (5, 8)
    torch.testing.assert_close(model(x), module(x))

    # A head that is not an nn.Linear: the sizes must be given.
    with pytest.raises(ValueError, match="pass num_classes= and feature_dim="):
        wrap_model(module, head="classifier")
    whole = wrap_model(module, head="classifier", num_classes=3, feature_dim=144)
    assert whole.features(x).shape == (5, 144)
    torch.testing.assert_close(whole(x), module(x))


def test_wrap_errors() -> None:
    module = _torchvision_resnet()
    with pytest.raises(ValueError, match=r"no child 'head'.*conv1, bn1, relu, maxpool, layer1"):
        wrap_model(module, head="head")
    with pytest.raises(ValueError, match=r"layer4.0 has no child 'fc'"):
        wrap_model(module, head="layer4.0.fc")
    with pytest.raises(TypeError, match="not a submodule"):
        wrap_model(module, head="fc.weight")
    with pytest.raises(ValueError, match="dotted submodule name"):
        wrap_model(module, head="fc.")
    with pytest.raises(ValueError, match="num_classes=5 contradicts"):
        wrap_model(module, head="fc", num_classes=5)
    with pytest.raises(ValueError, match=r"not a conun Classifier.*conv1"):
        wrap_model(module)
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        wrap_model(lambda x: x, head="fc")  # type: ignore[arg-type]


def test_wrap_returns_a_classifier_as_is() -> None:
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8))
    assert wrap_model(model) is model
    assert isinstance(wrap_model(model, head="head"), WrappedClassifier)
