"""Sequential deletion requests (issue #16, item 5): the quality of a ledger that honours requests
one after another, against (a) retraining from scratch on the final retain set and (b) one
unlearning run on the union of all requests.

    python experiments/sequential_study.py --dataset fashion-mnist --seed 0 \\
        --original /tmp/fm-runs/seed0/original --out experiments/results/sequential \\
        --sample-requests 10 --sample-size 100 --class-requests 3

Two chains, each a fresh ledger (``conun.Ledger``) whose version 0 is the original:

- sample chain: ``--sample-requests`` requests of ``--sample-size`` random training samples
  (seeded, outside the validation split, disjoint), each recorded and applied on its own;
- class chain: ``--class-requests`` requests of one random class each (seeded), each applied on
  its own.

After every apply the study measures the new version: every request so far's forget accuracy
(its training samples; a class request also its test samples), the test accuracy, the test
accuracy of the classes not forgotten so far, and the version's seconds (the method's, with the
ledger's re-forget of earlier classes; ``apply_seconds`` is the whole apply's wall clock, data
and certificate included). After the last step of each chain: (a) ``retrain`` (the original's
recipe on the final retain set) and (b) ``union`` (one run of the same method and config on the
union of the chain's requests), from the original, measured the same way. Every method runs with
the config ``conun ledger apply`` / ``conun unlearn`` would use (the method's shipped defaults for
the scenario plus the dataset's layer, seed ``--seed``), plus any ``--set KEY=VALUE`` (every apply
and the union run; retrain keeps the original's recipe).

Acceptance (issue #16), computed from rows.json by :func:`bounds`:

- sample chain, last step: every request's forget accuracy within 3 points of the retrained
  model's on the same samples; test accuracy within 1.5 points of retrain's;
- class chain, last step: every forgotten class <= 1% (on its test samples and on its training
  samples); retained-class test accuracy within 1.5 points of retrain's;
- each chain: its total unlearning seconds (the sum over its versions) <= 1/3 of its retraining.

Outputs in ``OUT``: rows.json, bounds.json, table.md, sequential.png/.pdf and README.md.
``--report-only`` rebuilds every output but rows.json from rows.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import conun
from conun.bench.grid import prepare_original
from conun.config import TrainConfig, build_train_config
from conun.data.arrays import DatasetBundle
from conun.data.splits import ForgetRetainSplit
from conun.engine.checkpoint import CHECKPOINT_FILE, read_checkpoint_meta
from conun.evaluation.accuracy import predict
from conun.io import atomic_write_json, atomic_write_text
from conun.models.base import Classifier
from conun.reproducibility import versions
from conun.viz.figure import new_figure, save_figure
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.inputs import load_checkpoint_for, recipe_of, validation_of
from conun.workflows.unlearning import run_method

ROWS_FILE = "rows.json"
METHOD = "contrastive"
SAMPLE_FORGET_POINTS = 0.03  # issue #16: per request, |ledger - retrain| forget accuracy
TEST_POINTS = 0.015  # test accuracy (sample chain) / retained-class test accuracy (class chain)
CLASS_ACCURACY = 0.01  # every forgotten class at most this accuracy
TIME_FRACTION = 1 / 3  # total unlearning seconds over one retraining


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--original", type=Path, help="run dir of the original (trained there if absent)"
    )
    parser.add_argument("--out", type=Path, default=Path("experiments/results/sequential"))
    parser.add_argument(
        "--work", type=Path, default=Path("runs/sequential-study"), help="the two ledgers"
    )
    parser.add_argument("--sample-requests", type=int, default=10)
    parser.add_argument("--sample-size", type=int, default=100)
    parser.add_argument("--class-requests", type=int, default=3)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of the unlearning config (every apply and the union run), e.g. "
        "stopping.class_accuracy=0.01; repeatable",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="rebuild the outputs from OUT/rows.json"
    )
    args = parser.parse_args(argv)
    if args.report_only:
        if not (args.out / ROWS_FILE).is_file():
            parser.error(f"--report-only needs {args.out / ROWS_FILE}")
        return args
    if args.original is None:
        parser.error("--original RUN_DIR is required (the original is trained there if absent)")
    for name in ("sample_requests", "sample_size", "class_requests"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    if args.sample_requests and not args.sample_size:
        parser.error("--sample-size must be >= 1 with sample requests")
    if not args.sample_requests and not args.class_requests:
        parser.error("nothing to study: give --sample-requests or --class-requests")
    return args


# -- measuring ------------------------------------------------------------------------------


def measure(
    model: Classifier,
    data: DatasetBundle,
    requests: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """Forget accuracy of every request, test accuracy, and test accuracy of the classes no
    request forgot.

    Args:
        model: the model to measure.
        data: the dataset.
        requests: ``{"request", "what", "ids"}`` (training indices) or ``{..., "classes"}``.
    """
    train_hits = predict(model, data.train.images) == data.train.labels
    test_hits = predict(model, data.test.images) == data.test.labels
    forgotten = torch.tensor(sorted({c for r in requests for c in r.get("classes", [])}))
    retained_test = ~torch.isin(data.test.labels, forgotten.long())
    per_request = []
    for request in requests:
        index = torch.tensor(request["ids"], dtype=torch.long)
        entry = {
            "request": request["request"],
            "what": request["what"],
            "forget_train_acc": float(train_hits[index].double().mean()),
            "forget_test_acc": None,
        }
        if "classes" in request:
            in_classes = torch.isin(data.test.labels, torch.tensor(request["classes"]))
            entry["forget_test_acc"] = float(test_hits[in_classes].double().mean())
        per_request.append(entry)
    return {
        "test_acc": float(test_hits.double().mean()),
        "retained_test_acc": float(test_hits[retained_test].double().mean()),
        "requests": per_request,
    }


# -- the chains -----------------------------------------------------------------------------


def draw_requests(
    args: argparse.Namespace, data: DatasetBundle, validation: torch.Tensor
) -> dict[str, list[dict[str, Any]]]:
    """The chains' requests, seeded: disjoint random samples outside the validation split, and
    distinct random classes."""
    generator = torch.Generator().manual_seed(args.seed)
    held_out = torch.zeros(len(data.train), dtype=torch.bool)
    held_out[validation] = True
    pool = torch.nonzero(~held_out).flatten()
    needed = args.sample_requests * args.sample_size
    if needed > pool.numel():
        raise SystemExit(f"{needed} samples requested but only {pool.numel()} can be forgotten")
    if args.class_requests >= data.num_classes:
        raise SystemExit(f"--class-requests must be < {data.num_classes} (something to retain)")
    drawn = pool[torch.randperm(pool.numel(), generator=generator)[:needed]]
    samples = [
        {
            "request": k + 1,
            "what": f"{args.sample_size} samples",
            "ids": sorted(drawn[k * args.sample_size : (k + 1) * args.sample_size].tolist()),
        }
        for k in range(args.sample_requests)
    ]
    order = torch.randperm(data.num_classes, generator=generator)[: args.class_requests].tolist()
    labels = data.train.labels
    classes = [
        {
            "request": k + 1,
            "what": f"class {c}",
            "classes": [c],
            "ids": torch.nonzero((labels == c) & ~held_out).flatten().tolist(),
        }
        for k, c in enumerate(order)
    ]
    return {"sample": samples, "class": classes}


def run_chain(
    chain: str,
    requests: list[dict[str, Any]],
    args: argparse.Namespace,
    original: Path,
    data: DatasetBundle,
) -> list[dict[str, Any]]:
    """One ledger from version 0, one request applied at a time; a row per version."""
    path = args.work / f"{chain}-chain"
    shutil.rmtree(path, ignore_errors=True)
    ledger = conun.Ledger.init(path, checkpoint=original)
    rows = []
    for step, request in enumerate(requests, start=1):
        if chain == "class":
            ledger.request(classes=request["classes"], reference=request["what"])
        else:
            ledger.request(ids=request["ids"], reference=request["what"])
        started = time.perf_counter()
        (version,) = ledger.apply(
            METHOD, layers=[("--seed", {"seed": args.seed})], overrides=args.overrides
        )
        apply_seconds = time.perf_counter() - started
        model, _ = load_checkpoint_for(path / version.checkpoint, data)
        certificate = json.loads((path / str(version.certificate)).read_text())
        reforget = certificate.get("reforget") or {}
        rows.append(
            {
                "chain": chain,
                "model": "ledger",
                "step": step,
                "seconds": version.seconds,
                "apply_seconds": apply_seconds,
                "stopped_by": certificate.get("stopped_by"),
                "reforget_runs": len(reforget.get("runs", [])),
                "certificate_passed": certificate["passed"],
                **measure(model, data, requests[:step]),
            }
        )
        print(f"{chain} step {step}: {rows[-1]['seconds']:.1f} s", flush=True)
    return rows


def references(
    chain: str,
    requests: list[dict[str, Any]],
    args: argparse.Namespace,
    model: Classifier,
    data: DatasetBundle,
    recipe: TrainConfig,
    validation: torch.Tensor,
    original_seconds: float | None,
) -> list[dict[str, Any]]:
    """(a) retrain on the final retain set and (b) one run on the union, from the original."""
    if chain == "class":
        classes = sorted(c for r in requests for c in r["classes"])
        split = ForgetRetainSplit.from_classes(
            data.train.labels, classes, num_classes=data.num_classes, validation=validation
        )
    else:
        ids = sorted(i for r in requests for i in r["ids"])
        split = ForgetRetainSplit.from_ids(ids, len(data.train), validation=validation)
    rows = []
    for label, method in (("retrain", "retrain"), ("union", METHOD)):
        config = resolve_unlearn_config(
            method,
            split.scenario,
            dataset=args.dataset,
            model=recipe.model,
            layers=[("--seed", {"seed": args.seed})],
            overrides=args.overrides if method == METHOD else (),
        ).config
        produced, record = run_method(
            config,
            model,
            data,
            split,
            train_config=recipe,
            original_seconds=original_seconds,
            quiet=True,
        )
        rows.append(
            {
                "chain": chain,
                "model": label,
                "step": len(requests),
                "seconds": record.seconds,
                "stopped_by": record.extra.get("stopped_by"),
                **measure(produced, data, requests),
            }
        )
        print(f"{chain} {label}: {record.seconds:.1f} s", flush=True)
    return rows


# -- the acceptance bounds, from the rows ---------------------------------------------------


def bounds(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue #16's acceptance bounds, each ``{"chain", "bound", "value", "limit", "holds"}``,
    computed from the rows alone (the last ledger step of each chain against its references)."""
    found: list[dict[str, Any]] = []

    def add(chain: str, bound: str, value: float, limit: float) -> None:
        # Accuracies are counts over a set: 0.91 - 0.88 is 0.030000000000000027 in floating
        # point, which must count as the 3 points it is.
        found.append(
            {
                "chain": chain,
                "bound": bound,
                "value": value,
                "limit": limit,
                "holds": value <= limit + 1e-9,
            }
        )

    for chain in ("sample", "class"):
        ledger = [r for r in rows if r["chain"] == chain and r["model"] == "ledger"]
        retrain = [r for r in rows if r["chain"] == chain and r["model"] == "retrain"]
        if not ledger or not retrain:
            continue
        last, reference = max(ledger, key=lambda r: r["step"]), retrain[0]
        if chain == "sample":
            theirs = {r["request"]: r["forget_train_acc"] for r in reference["requests"]}
            for each in last["requests"]:
                add(
                    chain,
                    f"request {each['request']}: |forget acc - retrain's|",
                    abs(each["forget_train_acc"] - theirs[each["request"]]),
                    SAMPLE_FORGET_POINTS,
                )
            add(
                chain,
                "|test acc - retrain's|",
                abs(last["test_acc"] - reference["test_acc"]),
                TEST_POINTS,
            )
        else:
            for each in last["requests"]:
                worst = max(each["forget_train_acc"], each["forget_test_acc"])
                add(chain, f"{each['what']}: accuracy (max of train, test)", worst, CLASS_ACCURACY)
            add(
                chain,
                "|retained-class test acc - retrain's|",
                abs(last["retained_test_acc"] - reference["retained_test_acc"]),
                TEST_POINTS,
            )
        total = sum(r["seconds"] for r in ledger)
        add(chain, "total unlearning s / retrain s", total / reference["seconds"], TIME_FRACTION)
    return found


# -- outputs --------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Every row: per step, every request so far's forget accuracy (train / test for a class)."""
    lines = [
        "| chain | model | step | test % | retained-class test % | forget % of each request so "
        "far | seconds | re-forget runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        forget = ", ".join(
            f"{r['request']}: {_pct(r['forget_train_acc'])}"
            + (f" / {_pct(r['forget_test_acc'])}" if r["forget_test_acc"] is not None else "")
            for r in row["requests"]
        )
        lines.append(
            f"| {row['chain']} | {row['model']} | {row['step']} | {_pct(row['test_acc'])} | "
            f"{_pct(row['retained_test_acc'])} | {forget} | {row['seconds']:.2f} | "
            f"{row.get('reforget_runs', '–')} |"
        )
    return "\n".join(lines) + "\n"


def figure(rows: Sequence[dict[str, Any]], out: Path) -> None:
    """One panel per chain: each request's forget accuracy and the test accuracy per step, the
    references' values at the last step."""
    chains = [c for c in ("sample", "class") if any(r["chain"] == c for r in rows)]
    fig = new_figure(5.5 * len(chains), 4.2)
    axes = fig.subplots(1, len(chains), squeeze=False)[0]
    for ax, chain in zip(axes, chains, strict=True):
        ledger = sorted(
            (r for r in rows if r["chain"] == chain and r["model"] == "ledger"),
            key=lambda r: r["step"],
        )
        utility = "test_acc" if chain == "sample" else "retained_test_acc"
        steps = [r["step"] for r in ledger]
        ax.plot(steps, [100 * r[utility] for r in ledger], "k-o", label=utility.replace("_", " "))
        for request in ledger[-1]["requests"] if ledger else []:
            points = [
                (r["step"], 100 * each["forget_train_acc"])
                for r in ledger
                for each in r["requests"]
                if each["request"] == request["request"]
            ]
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, "-", alpha=0.6, marker=".", label=f"forget: {request['what']}")
        for model, marker in (("retrain", "x"), ("union", "+")):
            for r in rows:
                if r["chain"] == chain and r["model"] == model:
                    forget = [100 * e["forget_train_acc"] for e in r["requests"]]
                    ax.plot([r["step"]] * len(forget), forget, marker, color="grey")
                    ax.plot(
                        r["step"],
                        100 * r[utility],
                        marker,
                        color="black",
                        markersize=10,
                        label=f"{model} (last step)",
                    )
        ax.set_title(f"{chain} requests, applied one after another")
        ax.set_xlabel("requests applied")
        ax.set_ylabel("accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    save_figure(fig, out / "sequential")


def readme(state: dict[str, Any], found: Sequence[dict[str, Any]]) -> str:
    setup = state["setup"]
    lines = [
        "# Sequential deletion requests (issue #16, item 5)",
        "",
        f"Command: `{state['command']}`",
        "",
        f"Machine: {state['machine']}; wall time {state['wall_seconds'] / 60:.1f} min; "
        f"versions {state['versions']}.",
        "",
        f"{setup['dataset']}, seed {setup['seed']}, original `{setup['original']}` "
        f"(its recipe retrains); method {METHOD} with the config `conun ledger apply` uses"
        + (f" plus {', '.join(setup['overrides'])}" if setup.get("overrides") else "")
        + ". "
        f"Sample chain: {setup['sample_requests']} requests of {setup['sample_size']} random "
        f"samples; class chain: {setup['class_requests']} one-class requests; each chain a "
        "fresh ledger from version 0, one apply per request. retrain: the original's recipe on "
        "the chain's final retain set; union: one run on the union of the chain's requests; "
        "both from the original. Seconds: each version's method seconds (with the ledger's "
        "re-forget of earlier classes), retrain's training, union's unlearning.",
        "",
        "## Acceptance bounds (computed from rows.json)",
        "",
        "| chain | bound | value | limit | holds |",
        "|---|---|---|---|---|",
    ]
    for b in found:
        lines.append(
            f"| {b['chain']} | {b['bound']} | {b['value']:.4f} | {b['limit']:.4f} | "
            f"{'yes' if b['holds'] else 'NO'} |"
        )
    verdict = "every bound holds" if all(b["holds"] for b in found) else "SOME BOUNDS FAIL"
    lines += [
        "",
        f"Verdict: {verdict}.",
        "",
        "## Every step (accuracies in %; a class request's forget accuracy: train / test)",
        "",
        table(state["rows"]),
        "![sequential](sequential.png)",
        "",
    ]
    return "\n".join(lines)


def write_outputs(out: Path, state: dict[str, Any]) -> list[dict[str, Any]]:
    found = bounds(state["rows"])
    atomic_write_json(out / "bounds.json", found)
    atomic_write_text(out / "table.md", table(state["rows"]))
    figure(state["rows"], out)
    atomic_write_text(out / "README.md", readme(state, found))
    return found


def main(argv: Sequence[str] | None = None) -> None:
    started = time.perf_counter()
    args = parse_args(argv)
    out: Path = args.out
    if args.report_only:
        write_outputs(out, json.loads((out / ROWS_FILE).read_text()))
        return
    checkpoint = args.original / CHECKPOINT_FILE
    if not checkpoint.is_file():
        print(f"training the original into {args.original}", flush=True)
        recipe = build_train_config(args.dataset, [{"seed": args.seed}])
        prepare_original(recipe, args.original, quiet=True)
    meta = read_checkpoint_meta(checkpoint)
    if meta.dataset != args.dataset:
        raise SystemExit(f"{args.original} is a {meta.dataset} model, not {args.dataset}")
    recipe = recipe_of(meta, checkpoint)
    model, meta, data = prepare_original(recipe, args.original, quiet=True)
    validation = validation_of(meta)
    chains = draw_requests(args, data, validation)
    rows: list[dict[str, Any]] = []
    for chain, requests in chains.items():
        if not requests:
            continue
        rows.append(
            {
                "chain": chain,
                "model": "original",
                "step": 0,
                "seconds": 0.0,
                **measure(model, data, requests),
            }
        )
        rows += run_chain(chain, requests, args, args.original, data)
        rows += references(chain, requests, args, model, data, recipe, validation, meta.seconds)
    state = {
        "setup": {
            "dataset": args.dataset,
            "seed": args.seed,
            "original": str(args.original),
            "sample_requests": args.sample_requests,
            "sample_size": args.sample_size,
            "class_requests": args.class_requests,
            "overrides": args.overrides,
        },
        "command": "python experiments/sequential_study.py "
        + shlex.join(sys.argv[1:] if argv is None else list(argv)),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{torch.get_num_threads()} threads, "
        + (torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"),
        "versions": versions(),
        "wall_seconds": time.perf_counter() - started,
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / ROWS_FILE, state)
    found = write_outputs(out, state)
    print(readme(state, found))


if __name__ == "__main__":
    main()
