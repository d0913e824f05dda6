"""Projected 8x H100 TTT time of other TTT settings, from one measured whole-val run of ours.

A TTT batch's time is the sum of its chunk steps. A chunk step forwards every running row's window (r rows of
T = min((ci + 1) x chunk, TTT_EVAL_SEQ_LEN) tokens), and unless every row is in its last chunk, it runs
TTT_GRAD_STEPS backward passes; each step after the first forwards the window again. So a step costs
    units x (a + b r T + c r T^2)
with units = TTT_GRAD_STEPS on a learning step and SCORE_ONLY_UNITS on a score-only one (a forward alone, where
a backward costs about two forwards). This script fits a, b, c (non-negative least squares) to the per-batch
seconds of one `bench_ttt_vs_reference.py --only ours --save RUN.json` run on the whole val shard, replays the
chunk steps of each variant's settings on the same documents with train_gpt's own plan and schedule, and
projects each with the bench's 8-GPU method. The global SGD time scales with the tokens the SGD passes train
on. Settings that change what a chunk step computes (adapters, model, tilt) are refused: measure those.

    python3 scripts/ttt_cost.py --fit RUN.json --val VAL.bin --settings RECIPE=2135 PHASED_TTT_PREFIX_DOCS=246 \\
        --variant steps2 TTT_GRAD_STEPS=2 --variant chunk36 TTT_CHUNK_SIZE=36 --fixed 36.3

--settings: the fitted run's settings (the bench saves them in RUN.json since this script exists; older runs
need them here). --check NAME LOG compares a variant's predicted elapsed times with a bench console's
ttt_progress lines (a run cut short included): its chunk step counts must match exactly. --fixed: the
evaluation's seconds outside TTT (artifact load, roundtrip eval), added to the projection for the verdict
against the 600 s evaluation limit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
import train_gpt as tg  # noqa: E402
from bench_ttt_vs_reference import projected_8gpu_seconds  # noqa: E402

SCORE_ONLY_UNITS = 1 / 3  # a forward, where a learning step is a forward and a backward (~2 forwards)
# what the cost model covers: how many chunk steps, of which shapes, with how many passes; and the SGD's tokens
MODELLED = {"ttt_chunk_size", "ttt_short_score_first_steps", "ttt_grad_steps", "ttt_grad_steps_clean",
            "ttt_batch_size", "ttt_eval_seq_len", "phased_ttt_prefix_docs", "phased_ttt_num_phases",
            "global_ttt_epochs"}
BENCH_ENV = {"TTT_RECORD_WORLD_SIZE": "1"}  # as bench_ttt_vs_reference runs ours


def settings_of(pairs: list[str], where: str) -> dict:
    bad = [p for p in pairs if not re.fullmatch(r"[A-Z][A-Z0-9_]*=\S*", p)]
    if bad:
        raise SystemExit(f"{where}: {' '.join(bad)} is not KEY=VALUE (e.g. TTT_GRAD_STEPS=2)")
    return dict(p.split("=", 1) for p in pairs)


def step_shapes(h: tg.Hyperparameters, plan: tg.TTTPlan) -> list[list[tuple[int, int, bool]]]:
    """Per batch, its chunk steps as (rows, window tokens T, learns), in the order ttt_batch runs them."""
    batches = []
    for docs in plan.batches:
        pred_lens = plan.lengths[docs] - 1
        chunk = tg.batch_chunk_size(h, int(pred_lens.max()) + 1)
        n_chunks = -(-pred_lens // chunk)
        batches.append([(len(docs) - first, min((ci + 1) * chunk, h.ttt_eval_seq_len), learn < len(docs))
                        for ci, first, learn in tg.chunk_schedule(n_chunks)])
    return batches


def features(h: tg.Hyperparameters, plan: tg.TTTPlan) -> np.ndarray:
    """(batches, 3): per batch, the sums over its chunk steps of units, units r T and units r T^2."""
    out = np.zeros((len(plan.batches), 3))
    for i, steps in enumerate(step_shapes(h, plan)):
        r, t, learns = np.array(steps, dtype=np.float64).T
        units = np.where(learns > 0, h.ttt_grad_steps, SCORE_ONLY_UNITS)
        out[i] = units.sum(), (units * r * t).sum(), (units * r * t * t).sum()
    return out


def sgd_tokens(tokens: np.ndarray, h: tg.Hyperparameters, plan: tg.TTTPlan) -> int:
    """Tokens the global SGD passes train on, epochs counted."""
    return h.global_ttt_epochs * sum(len(tg.sgd_stream(tokens, plan, p)) for p, n in enumerate(plan.phase_docs) if n)


@dataclasses.dataclass
class CostModel:
    coef: np.ndarray  # a, b, c of a chunk step's seconds per unit: a + b r T + c r T^2
    sgd_seconds_per_token: float | None  # None: the fitted run trained no global SGD
    other_seconds: float  # the fitted run's time outside batches and SGD (its n-gram hints, its plan)
    r2: float
    worst_batch: float  # the largest |predicted - measured| seconds of one batch


def fit(run: dict, tokens: np.ndarray, h: tg.Hyperparameters) -> tuple[CostModel, tg.TTTPlan]:
    plan = tg.plan_ttt(tokens, h)
    measured = np.asarray(run["batch_seconds"], dtype=np.float64)
    if len(measured) != len(plan.batches):
        raise SystemExit(f"the run has {len(measured)} batch times, but its settings plan {len(plan.batches)} "
                         "batches on --val: fit on the run's own val shard and settings (--settings, e.g. "
                         "TTT_BATCH_SIZE, PHASED_TTT_PREFIX_DOCS as it ran)")
    x = features(h, plan)
    scale = x.max(axis=0)  # the columns span ~10^3..10^12: solve on unit-scaled columns
    coef = nnls(x / scale, measured)[0] / scale
    predicted = x @ coef
    left = run["seconds"] - measured.sum()
    n_sgd = sgd_tokens(tokens, h, plan)
    # the SGD's share of the time outside batches: all of it but the hints' and plan's (their own seconds are
    # not saved; with no SGD pass, the whole remainder)
    model = CostModel(coef=coef, sgd_seconds_per_token=left / n_sgd if n_sgd else None,
                      other_seconds=0.0 if n_sgd else left,
                      r2=1 - ((predicted - measured) ** 2).sum() / ((measured - measured.mean()) ** 2).sum(),
                      worst_batch=float(np.abs(predicted - measured).max()))
    return model, plan


def check_modelled(base: tg.Hyperparameters, h: tg.Hyperparameters, name: str) -> None:
    changed = [f.name.upper() for f in dataclasses.fields(h)
               if getattr(h, f.name) != getattr(base, f.name) and f.name not in MODELLED | {"recipe"}]  # a name
    if changed:
        raise SystemExit(f"variant {name}: {', '.join(changed)} changes what a chunk step computes, which this "
                         f"cost model does not cover (it covers {', '.join(sorted(m.upper() for m in MODELLED))}): "
                         "measure it with bench_ttt_vs_reference.py --only ours")


@dataclasses.dataclass
class Prediction:
    plan: tg.TTTPlan
    batch_seconds: np.ndarray
    chunk_steps: np.ndarray  # per batch
    sgd_seconds: list  # per phase (0 where no pass)
    projected: float  # 8x H100 TTT seconds, the bench's method


def predict(model: CostModel, tokens: np.ndarray, h: tg.Hyperparameters, name: str) -> Prediction:
    plan = tg.plan_ttt(tokens, h)
    batch_seconds = features(h, plan) @ model.coef
    per_phase = [h.global_ttt_epochs * len(tg.sgd_stream(tokens, plan, p)) if n else 0
                 for p, n in enumerate(plan.phase_docs)]
    if sum(per_phase) and model.sgd_seconds_per_token is None:
        raise SystemExit(f"variant {name} trains a global SGD pass, but the fitted run trained none: its time per "
                         "SGD token is unknown (fit on a run with PHASED_TTT_PREFIX_DOCS > 0)")
    sgd = [n * (model.sgd_seconds_per_token or 0.0) for n in per_phase]
    total = batch_seconds.sum() + sum(sgd) + model.other_seconds
    projected = projected_8gpu_seconds(plan, list(batch_seconds), total, len(plan.starts))[0]
    steps = np.array([len(s) for s in step_shapes(h, plan)])
    return Prediction(plan, batch_seconds, steps, sgd, projected)


PROGRESS = re.compile(r"ttt_progress batch:(\d+)/\d+ phase:\d+ chunk_steps:(\d+) elapsed:([\d.]+)s")
SGD_LINE = re.compile(r"ttt_global_sgd phase:(\d+) .*elapsed:([\d.]+)s")


def check_log(pred: Prediction, text: str, name: str) -> list[str]:
    """Rows comparing a bench console's progress lines with the prediction; its chunk steps must match."""
    ends = pred.plan.phase_ends
    cum_seconds, cum_steps = np.cumsum(pred.batch_seconds), np.cumsum(pred.chunk_steps)
    rows = []
    for line in text.splitlines():
        if m := PROGRESS.search(line):
            batch, steps, elapsed = int(m[1]), int(m[2]), float(m[3])
            if steps != cum_steps[batch - 1]:
                raise SystemExit(f"--check {name}: the log ran {steps} chunk steps by batch {batch}, these settings "
                                 f"plan {cum_steps[batch - 1]}: the log ran other settings or another val")
            done = cum_seconds[batch - 1] + sum(s for p, s in enumerate(pred.sgd_seconds) if ends[p] < batch)
            rows.append((f"batch {batch}", elapsed, done))
        elif m := SGD_LINE.search(line):
            phase, elapsed = int(m[1]), float(m[2])
            done = cum_seconds[ends[phase - 1] - 1] + sum(pred.sgd_seconds[:phase])
            rows.append((f"after SGD {phase}", elapsed, done))
    if not rows:
        raise SystemExit(f"--check {name}: no ttt_progress lines in the log")
    return [f"| {where} | {measured:.1f} | {predicted:.1f} | {predicted / measured:.3f} |"
            for where, measured, predicted in rows]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fit", required=True, help="a bench_ttt_vs_reference.py --only ours --save JSON of the "
                                                 "whole val shard")
    ap.add_argument("--val", required=True, help="that run's val shard (.bin)")
    ap.add_argument("--settings", nargs="*", default=None, metavar="KEY=VALUE",
                    help="the fitted run's settings, when its JSON has none")
    ap.add_argument("--variant", nargs="+", action="append", default=[], metavar=("NAME", "KEY=VALUE"),
                    help="a variant: its name, then its settings over the fitted run's (repeatable)")
    ap.add_argument("--check", nargs=2, action="append", default=[], metavar=("NAME", "LOG"),
                    help="compare variant NAME's prediction with a bench console LOG (repeatable)")
    ap.add_argument("--fixed", type=float, default=0.0, help="evaluation seconds outside TTT (artifact load, "
                                                             "roundtrip eval) for the verdict")
    args = ap.parse_args(argv)
    run = json.loads(Path(args.fit).read_text())
    if "batch_seconds" not in run:
        raise SystemExit(f"{args.fit} has no batch_seconds: save a whole-val run of ours with "
                         "bench_ttt_vs_reference.py --only ours --save")
    if args.settings is None and "settings" not in run:
        raise SystemExit(f"{args.fit} does not say what ran: give --settings (e.g. RECIPE=2135 "
                         "PHASED_TTT_PREFIX_DOCS=246)")
    base_env = settings_of(args.settings, "--settings") if args.settings is not None else run["settings"]
    try:
        tokens = tg.read_shard(args.val).astype(np.int64)
    except (OSError, ValueError) as e:
        raise SystemExit(f"--val {args.val}: {e}")
    base = tg.load_hyperparameters({**base_env, **BENCH_ENV})
    model, plan = fit(run, tokens, base)
    fitted = projected_8gpu_seconds(plan, run["batch_seconds"], run["seconds"], len(plan.starts))[0]
    a, b, c = model.coef
    print(f"fit on {args.fit} ({' '.join(f'{k}={v}' for k, v in base_env.items())}): a chunk step {a * 1e3:.2f} ms "
          f"+ {b * 1e9:.3f} ns x rows x T + {c * 1e12:.4f} ps x rows x T^2 per unit; R^2 {model.r2:.4f} over "
          f"{len(plan.batches)} batches, worst batch off by {model.worst_batch:.2f} s\n")
    predictions, rows = {}, []
    for name, *pairs in [["fitted"], *args.variant]:
        h = tg.load_hyperparameters({**base_env, **settings_of(pairs, f"--variant {name}"), **BENCH_ENV})
        check_modelled(base, h, name)
        predictions[name] = predict(model, tokens, h, name)
        rows.append((name, " ".join(pairs) or f"as fitted (measured: {fitted:.1f} s)"))
    for name, _ in args.check:
        if name not in predictions:
            raise SystemExit(f"--check {name}: no such variant (have: {' '.join(predictions)})")
    # the model's projection of the fitted run against the measured one: the other projections get that ratio
    calibration = fitted / predictions["fitted"].projected
    print(f"| variant | settings | chunk steps | batch seconds (1 GPU) | projected 8x H100 TTT s: model | "
          f"x {calibration:.3f} (measured / model, fitted run) | eval s (+{args.fixed:g} fixed) | "
          f"within {tg.EVAL_LIMIT_SECONDS} s |\n|---|---|---|---|---|---|---|---|")
    for name, label in rows:
        pred = predictions[name]
        total = pred.projected * calibration + args.fixed
        print(f"| {name} | {label} | {pred.chunk_steps.sum():,} | {pred.batch_seconds.sum():.1f} | "
              f"{pred.projected:.1f} | {pred.projected * calibration:.1f} | {total:.1f} | "
              f"{'yes' if total <= tg.EVAL_LIMIT_SECONDS else '**no**'} |")
    for name, log in args.check:
        print(f"\n{name} against {log} (elapsed seconds on its clock; chunk steps match)\n\n"
              "| where | measured | predicted | predicted / measured |\n|---|---|---|---|")
        print("\n".join(check_log(predictions[name], Path(log).read_text(), name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
