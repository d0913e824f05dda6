"""Projected 8x H100 TTT time of other TTT settings, from one measured whole-val run of ours.

A TTT batch's time is its set-up plus the sum of its chunk steps. A chunk step forwards every running row's window
(r rows of T = min((ci + 1) x chunk, TTT_EVAL_SEQ_LEN) tokens), and unless every row is in its last chunk, it runs
one backward pass per Adam step (TTT_GRAD_STEPS, or one past TTT_GRAD_STEPS_TOKENS of the documents); each step
after the first forwards the window again. So a batch costs
    d + sum over its chunk steps of units x (a + b r T + c r T^2)
with units = its Adam steps on a learning step and SCORE_ONLY_UNITS on a score-only one (a forward alone, where
a backward costs about two forwards). This script fits d, a, b, c (non-negative least squares) to the per-batch
seconds of one `bench_ttt_vs_reference.py --only ours --save RUN.json` run on the whole val shard, replays the
chunk steps of each variant's settings on the same documents with train_gpt's own plan and schedule, and
projects each with the bench's 8-GPU method. The global SGD time scales with the tokens the SGD passes train
on. The coefficients are the fitted run's GPU's: project for the GPU that ran it. Settings outside the model (the
adapters, the model, the tilt) are refused: measure those.

    python3 scripts/ttt_cost.py --fit RUN.json --val VAL.bin --settings RECIPE=2135 PHASED_TTT_PREFIX_DOCS=246 \\
        --variant steps2 TTT_GRAD_STEPS=2 --variant chunk36 TTT_CHUNK_SIZE=36 --fixed 36.3 --limit 540

--settings: the fitted run's settings (the bench saves them in RUN.json since this script exists, and their
resolved values since 2026-12-06, so that a run of RECIPE=golf keeps meaning what it ran after golf changes;
older runs need them here). --check NAME LOG compares a variant's predicted elapsed times with a bench console's
ttt_progress lines (a run cut short included); its chunk step counts must match (they do not tell TTT_GRAD_STEPS
apart). --fixed: the evaluation's seconds outside TTT (artifact load, roundtrip eval), added for the verdict
against --limit (default: the challenge's 600 s).
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
from ab_runs import EVAL_KEYS  # noqa: E402
from record_oracle import env_value  # noqa: E402

SCORE_ONLY_UNITS = 1 / 3  # a forward, where a learning step is a forward and a backward (~2 forwards)
# what the cost model covers: how many chunk steps, of which shapes, with how many passes; and the SGD's tokens
MODELLED = {"ttt_chunk_size", "ttt_short_score_first_steps", "ttt_grad_steps", "ttt_grad_steps_clean",
            "ttt_grad_steps_tokens", "ttt_batch_size", "ttt_eval_seq_len", "phased_ttt_prefix_docs",
            "phased_ttt_num_phases", "global_ttt_epochs"}
BENCH_ENV = {"TTT_RECORD_WORLD_SIZE": "1"}  # as bench_ttt_vs_reference runs ours
FITTED = "fitted"  # the fitted run's own row


def settings_of(pairs: list[str], where: str) -> dict:
    bad = [p for p in pairs if not re.fullmatch(r"[A-Z][A-Z0-9_]*=\S*", p)]
    if bad:
        raise SystemExit(f"{where}: {' '.join(bad)} is not KEY=VALUE (e.g. TTT_GRAD_STEPS=2)")
    return dict(p.split("=", 1) for p in pairs)


def step_shapes(h: tg.Hyperparameters, plan: tg.TTTPlan) -> list[list[tuple[int, int, int]]]:
    """Per batch, its chunk steps as (rows, window tokens T, Adam steps after it: 0 on a score-only step), in the
    order ttt_batch runs them."""
    batches = []
    for docs in plan.batches:
        chunk, n_chunks = tg.batch_chunks(h, plan.lengths[docs])
        grad_steps = tg.chunk_grad_steps(h, chunk, int(n_chunks.max()))
        batches.append([(len(docs) - first, min((ci + 1) * chunk, h.ttt_eval_seq_len),
                         grad_steps[ci] if learn < len(docs) else 0)
                        for ci, first, learn in tg.chunk_schedule(n_chunks)])
    return batches


def features(shapes: list) -> np.ndarray:
    """(batches, 4): per batch of step_shapes, 1 (its set-up) and the sums over its chunk steps of units, units r T,
    units r T^2."""
    out = np.zeros((len(shapes), 4))
    for i, steps in enumerate(shapes):
        r, t, adam_steps = np.array(steps, dtype=np.float64).T
        units = np.where(adam_steps > 0, adam_steps, SCORE_ONLY_UNITS)
        out[i] = 1.0, units.sum(), (units * r * t).sum(), (units * r * t * t).sum()
    return out


def sgd_tokens(tokens: np.ndarray, h: tg.Hyperparameters, plan: tg.TTTPlan) -> list[int]:
    """Per phase, the tokens its global SGD pass trains on, epochs counted (0 where no pass)."""
    return [h.global_ttt_epochs * len(tg.sgd_stream(tokens, plan, p)) if n else 0
            for p, n in enumerate(plan.phase_docs)]


@dataclasses.dataclass
class CostModel:
    coef: np.ndarray  # d, a, b, c: a batch's set-up, a chunk step's a + b r T + c r T^2 seconds per unit
    sgd_seconds_per_token: float | None  # None: the fitted run trained no global SGD
    other_seconds: float  # the fitted run's time outside batches and SGD when it had no SGD pass (hints, plan)
    r2: float
    worst_batch: float  # the largest |predicted - measured| seconds of one batch


def fit(run: dict, tokens: np.ndarray, h: tg.Hyperparameters) -> tuple[CostModel, tg.TTTPlan]:
    plan = tg.plan_ttt(tokens, h)
    measured = np.asarray(run["batch_seconds"], dtype=np.float64)
    if len(measured) != len(plan.batches):
        raise SystemExit(f"the run has {len(measured)} batch times, but its settings plan {len(plan.batches)} "
                         "batches on --val: fit on the run's own val shard and settings (--settings, e.g. "
                         "TTT_BATCH_SIZE, PHASED_TTT_PREFIX_DOCS as it ran)")
    x = features(step_shapes(h, plan))
    scale = x.max(axis=0)  # the columns span ~10^0..10^12: solve on unit-scaled columns
    coef = nnls(x / scale, measured)[0] / scale
    predicted = x @ coef
    left = run["seconds"] - measured.sum()
    n_sgd = sum(sgd_tokens(tokens, h, plan))
    # what the batches leave is the SGD's (the hints' and the plan's seconds are not saved apart); with no SGD
    # pass, a fixed remainder
    model = CostModel(coef=coef, sgd_seconds_per_token=left / n_sgd if n_sgd else None,
                      other_seconds=0.0 if n_sgd else left,
                      r2=1 - ((predicted - measured) ** 2).sum() / ((measured - measured.mean()) ** 2).sum(),
                      worst_batch=float(np.abs(predicted - measured).max()))
    return model, plan


def pinned_settings(run: dict, base_env: dict, given: bool, path: str) -> dict:
    """The evaluation settings the fitted run ran that its settings no longer give (a recipe of golfrun's own,
    golf, changes as candidates win; a record's is its logged configuration), from the values the bench saves
    ("resolved"). Refused: a run saved before it did, under a recipe of golfrun's own; --settings that
    contradict the saved values."""
    recipe = base_env.get("RECIPE", tg.Hyperparameters.recipe)
    if "resolved" not in run:
        if not recipe.isdigit():
            raise SystemExit(f"{path} does not store the values it ran, and RECIPE={recipe} is golfrun's own recipe, "
                             "whose settings change between versions: give them over a record's recipe with "
                             "--settings (e.g. RECIPE=2135 TTT_GRAD_STEPS=2 PHASED_TTT_PREFIX_DOCS=246 for "
                             "RECIPE=golf before 2026-12-06)")
        return {}
    try:
        now = dataclasses.asdict(tg.load_hyperparameters({**base_env, **BENCH_ENV}))
    except ValueError as e:
        raise SystemExit(f"the settings of {path}: {e}") from None
    ran = {key: run["resolved"][key.lower()] for key in EVAL_KEYS if key.lower() in run["resolved"]}
    missing = sorted(m.upper() for m in MODELLED if m.upper() not in ran)
    if missing:
        raise SystemExit(f"{path} does not store {', '.join(missing)}: saved by an older bench; give what it ran "
                         "with --settings")
    pinned = {key: env_value(value) for key, value in ran.items() if value != now[key.lower()]}
    if given and pinned:
        raise SystemExit(f"--settings differ from what {path} ran: "
                         f"{' '.join(f'{k}={env_value(now[k.lower()])} (ran {v})' for k, v in pinned.items())}")
    return pinned


def variant_settings(base_env: dict, name: str, pairs: list[str], pinned: dict) -> tg.Hyperparameters:
    """A variant's resolved settings over the fitted run's (pinned: where its settings give other values now; a
    variant that names RECIPE takes that recipe as it is now), refused when a value is bad or when the evaluator
    would refuse them."""
    try:
        own = settings_of(pairs, f"--variant {name}")
        h = tg.load_hyperparameters({**base_env, **({} if "RECIPE" in own else pinned), **own, **BENCH_ENV})
        tg.check_ttt_settings(h, 1)
    except ValueError as e:
        raise SystemExit(f"--variant {name}: {e}") from None
    return h


def check_modelled(base: tg.Hyperparameters, h: tg.Hyperparameters, name: str) -> None:
    changed = [f.name.upper() for f in dataclasses.fields(h)
               if getattr(h, f.name) != getattr(base, f.name) and f.name not in MODELLED | {"recipe"}]  # a name
    if changed:
        raise SystemExit(f"variant {name}: {', '.join(changed)} is not a setting this cost model covers (it covers "
                         f"{', '.join(sorted(m.upper() for m in MODELLED))}): measure the variant with "
                         "bench_ttt_vs_reference.py --only ours")


@dataclasses.dataclass
class Prediction:
    plan: tg.TTTPlan
    batch_seconds: np.ndarray
    chunk_steps: np.ndarray  # per batch
    sgd_seconds: list  # per phase (0 where no pass)
    projected: float  # 8x H100 TTT seconds, the bench's method


def predict(model: CostModel, tokens: np.ndarray, h: tg.Hyperparameters, name: str) -> Prediction:
    plan = tg.plan_ttt(tokens, h)
    shapes = step_shapes(h, plan)
    batch_seconds = features(shapes) @ model.coef
    per_phase = sgd_tokens(tokens, h, plan)
    if sum(per_phase) and model.sgd_seconds_per_token is None:
        raise SystemExit(f"variant {name} trains a global SGD pass, but the fitted run trained none: its time per "
                         "SGD token is unknown (fit on a run with PHASED_TTT_PREFIX_DOCS > 0)")
    sgd = [n * (model.sgd_seconds_per_token or 0.0) for n in per_phase]
    total = batch_seconds.sum() + sum(sgd) + model.other_seconds
    projected = projected_8gpu_seconds(plan, list(batch_seconds), total, len(plan.starts))[0]
    return Prediction(plan, batch_seconds, np.array([len(steps) for steps in shapes]), sgd, projected)


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
            if not 1 <= batch <= len(cum_steps) or steps != cum_steps[batch - 1]:
                raise SystemExit(f"--check {name}: the log ran {steps} chunk steps by batch {batch}, these settings "
                                 f"plan {cum_steps[min(batch, len(cum_steps)) - 1]} by then in "
                                 f"{len(cum_steps)} batches: the log ran other settings or another val")
            done = cum_seconds[batch - 1] + sum(s for p, s in enumerate(pred.sgd_seconds) if ends[p] < batch)
            rows.append((f"batch {batch}", elapsed, done))
        elif m := SGD_LINE.search(line):
            phase, elapsed = int(m[1]), float(m[2])
            if not 1 <= phase < len(ends):
                raise SystemExit(f"--check {name}: the log has an SGD pass after phase {phase}, these settings plan "
                                 f"{len(ends) - 1} phase pauses: the log ran other settings")
            done = cum_seconds[ends[phase - 1] - 1] + sum(pred.sgd_seconds[:phase])
            rows.append((f"after SGD {phase}", elapsed, done))
    if not rows:
        raise SystemExit(f"--check {name}: no ttt_progress lines in the log")
    if any(measured <= 0 for _, measured, _ in rows):
        raise SystemExit(f"--check {name}: an elapsed time of 0 s in the log: not a timed run")
    return [f"| {where} | {measured:.1f} | {predicted:.1f} | {predicted / measured:.3f} |"
            for where, measured, predicted in rows]


def read_run(path: str) -> dict:
    try:
        run = json.loads(Path(path).read_text())
    except OSError as e:
        raise SystemExit(f"--fit {path}: {e}") from None
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise SystemExit(f"--fit {path}: not a JSON file of bench_ttt_vs_reference.py --save ({e})") from None
    missing = [key for key in ("batch_seconds", "seconds") if key not in run]
    if missing:
        raise SystemExit(f"{path} has no {' or '.join(missing)}: save a whole-val run of ours with "
                         "bench_ttt_vs_reference.py --only ours --save")
    return run


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
    ap.add_argument("--limit", type=float, default=tg.EVAL_LIMIT_SECONDS, help="the evaluation seconds the verdict "
                                                                               "checks against")
    args = ap.parse_args(argv)
    names = [name for name, *_ in args.variant]
    bad = sorted({n for n in names if "=" in n or n == FITTED} | {n for n in names if names.count(n) > 1})
    if bad:
        raise SystemExit(f"--variant names {', '.join(bad)}: a variant needs a name of its own before its settings "
                         f"(not KEY=VALUE, not '{FITTED}', not repeated)")
    logs = {}
    for name, log in args.check:
        if name not in names + [FITTED]:
            raise SystemExit(f"--check {name}: no such variant (have: {' '.join([FITTED] + names)})")
        try:
            logs[name, log] = Path(log).read_text()
        except OSError as e:
            raise SystemExit(f"--check {name}: {e}") from None
    run = read_run(args.fit)
    if args.settings is None and "settings" not in run:
        raise SystemExit(f"{args.fit} does not say what ran: give --settings (e.g. RECIPE=2135 "
                         "PHASED_TTT_PREFIX_DOCS=246)")
    base_env = settings_of(args.settings, "--settings") if args.settings is not None else run["settings"]
    try:
        tokens = tg.read_shard(args.val).astype(np.int64)
    except (OSError, ValueError) as e:
        raise SystemExit(f"--val {args.val}: {e}") from None
    pinned = pinned_settings(run, base_env, args.settings is not None, args.fit)
    base = variant_settings(base_env, FITTED, [], pinned)
    if base.ttt_grad_chunk_only:  # its learning steps cost a chunk's pass, not the window's: other units
        raise SystemExit(f"{args.fit} ran with TTT_GRAD_CHUNK_ONLY=1, which this cost model does not cover: "
                         "measure its variants with bench_ttt_vs_reference.py --only ours")
    model, plan = fit(run, tokens, base)
    predictions, labels = {}, {}
    for name, *pairs in [[FITTED], *args.variant]:
        h = variant_settings(base_env, name, pairs, pinned)
        check_modelled(base, h, name)
        predictions[name] = predict(model, tokens, h, name)
        labels[name] = " ".join(pairs)
    checks = {key: check_log(predictions[key[0]], text, key[0]) for key, text in logs.items()}
    measured = projected_8gpu_seconds(plan, run["batch_seconds"], run["seconds"], len(plan.starts))[0]
    labels[FITTED] = f"as fitted (measured: {measured:.1f} s)"
    d, a, b, c = model.coef
    as_run = " ".join(f"{k}={v}" for k, v in {**base_env, **pinned}.items())
    print(f"fit on {args.fit} ({as_run}): a batch {d:.3f} s + a chunk step "
          f"{a * 1e3:.2f} ms + {b * 1e9:.3f} ns x rows x T + {c * 1e12:.4f} ps x rows x T^2 per unit; R^2 "
          f"{model.r2:.4f} over {len(plan.batches)} batches, worst batch off by {model.worst_batch:.2f} s\n")
    print(f"| variant | settings | chunk steps | batch seconds (1 GPU) | projected 8x H100 TTT s | eval s "
          f"(+{args.fixed:g} fixed) | within {args.limit:g} s |\n|---|---|---|---|---|---|---|")
    for name, pred in predictions.items():
        total = pred.projected + args.fixed
        print(f"| {name} | {labels[name]} | {pred.chunk_steps.sum():,} | {pred.batch_seconds.sum():.1f} | "
              f"{pred.projected:.1f} | {total:.1f} | {'yes' if total <= args.limit else '**no**'} |")
    for (name, log), rows in checks.items():
        print(f"\n{name} against {log} (elapsed seconds on its clock)\n\n"
              "| where | measured | predicted | predicted / measured |\n|---|---|---|---|")
        print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
