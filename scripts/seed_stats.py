"""Seed statistics for the challenge's record bar: does configuration NEW beat OLD by at least 0.005 nats?

    # against a published record (its submission.json, or its per-seed val_bpb on the command line)
    python scripts/seed_stats.py --new logs/mine_s1.txt logs/mine_s2.txt logs/mine_s3.txt \
                                 --old-submission records/.../submission.json
    python scripts/seed_stats.py --new logs/mine_*.txt --old-bpb 1.07009653 1.06919893 1.06942136
    python scripts/seed_stats.py --new logs/mine_*.txt --baseline sp8192     # the best published SP8192 result
    # two sets of our own logs
    python scripts/seed_stats.py --old logs/base_s*.txt --new logs/mine_s*.txt [--p 0.01] [--margin-nats 0.005]

Reads each train_gpt.py log's final score (final_ttt_exact, else final_roundtrip_exact), checks that the logs of
one side are seeds of one configuration, and prints mean and std per side, in nats (val_loss) and bpb, with the
one-sided Welch t-test p-value for H1: mean_old - mean_new > margin. The defaults are the challenge README's rule:
0.005 nats at p < 0.01. A published baseline is compared in nats: its own val_loss, or its bpb times its own
bytes per token (BASELINES), or, for --old-bpb alone, the bytes per token of the NEW logs (which assumes the same
validation set and tokenizer). The bpb bar is the nats bar in the NEW logs' bpb per nat.
"""

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from scipy import stats

import golflog

SCORE_LABELS = ("final_ttt_exact", "final_roundtrip_exact")
RULE_MARGIN_NATS = 0.005  # the challenge README: a new record beats the last by 0.005 nats ...
RULE_P = 0.01  # ... at p < 0.01
# The best published result of each tokenizer family (../shared/reference/LEADERBOARD.md), kept here because
# golfrun ships without ../shared: per-seed val_bpb from the records' final lines (record_1886_seed*.log
# `quantized_ttt_phased`; record_2135/submission.json seed_results), and the validation bytes per token that their
# val_loss / val_bpb / ln 2 give (the same to 1e-8 in every seed: one validation set and tokenizer per family).
BASELINES = {
    "sp8192": dict(name="PR #1886 (SP8192; fused softcap CE + TTT weight decay 2.0)", bytes_per_token=3.72663113,
                   bpb=[1.07009653, 1.06919893, 1.06942136]),  # seeds 1337, 42, 314
    "caseops": dict(name="PR #2135 (CaseOps; n-gram tilt, AsymLogit, GPTQ 32 calibration batches)",
                    bytes_per_token=3.15715152, bpb=[1.05662016, 1.05610947, 1.05679341]),  # seeds 314, 42, 0
}


def read_log(path: Path) -> dict:
    text = golflog.read_log(path)
    problem = golflog.failure(text)
    if problem:
        raise SystemExit(f"{path}: {problem}: not a finished run")
    for label in SCORE_LABELS:
        score = golflog.final_score(text, label)
        if score:
            break
    else:
        raise SystemExit(f"{path}: no final_ttt_exact/final_roundtrip_exact line: the run crashed or is unfinished")
    config = golflog.resolved_config(text)
    if "seed" not in config:
        raise SystemExit(f"{path}: no resolved config in the log (is it a train_gpt.py log?)")
    return dict(path=path, label=label, nats=score[0], bpb=score[1], config=config)


def check_same_config(runs: list[dict], side: str) -> None:
    paths = [Path(r["path"]).resolve() for r in runs]
    if len(set(paths)) < len(paths):
        raise SystemExit(f"--{side} names one log twice: each seed once")
    for run in runs[1:]:
        diff = golflog.config_differences(runs[0]["config"], run["config"])
        if diff:
            raise SystemExit(f"--{side} logs are not seeds of one configuration: {run['path']} differs from "
                             f"{runs[0]['path']} in {', '.join(diff[:8])}")
    seeds = [r["config"]["seed"] for r in runs]
    if len(set(seeds)) < len(seeds):
        raise SystemExit(f"--{side} logs repeat a seed ({', '.join(seeds)}): each seed once")
    if len({r["label"] for r in runs}) > 1:
        raise SystemExit(f"--{side} logs mix TTT and non-TTT final scores")


def read_side(paths, side: str, configs: list[dict] | None = None) -> dict:
    """{"nats": [...], "bpb": [...]} of one side's logs, one per seed; configs: the runs' own where a log scored
    another run's artifact (ab_runs: a run cut short after writing it, evaluated again from it)."""
    if len(paths) < 2:
        raise SystemExit(f"--{side} needs at least 2 logs (seeds) for a standard deviation")
    runs = [read_log(Path(p)) for p in paths]
    runs = [dict(run, config=config) for run, config in zip(runs, configs)] if configs else runs
    check_same_config(runs, side)
    return dict(nats=[r["nats"] for r in runs], bpb=[r["bpb"] for r in runs], source=f"{len(runs)} logs")


def published_scores(path: Path) -> dict:
    """Per-seed scores of a record's submission.json (seed_results: {seed: {val_bpb, [val_loss]}})."""
    try:
        submission = json.loads(golflog.read_log(path))
    except json.JSONDecodeError as err:
        raise SystemExit(f"{path}: not JSON ({err}): give a record's submission.json") from None
    results = submission.get("seed_results") if isinstance(submission, dict) else None
    if not isinstance(results, dict) or len(results) < 2:
        raise SystemExit(f"{path}: no seed_results with at least 2 seeds: give --old-bpb with the per-seed scores")
    try:
        bpb = [float(r["val_bpb"]) for r in results.values()]
        with_loss = all(isinstance(r, dict) and "val_loss" in r for r in results.values())
        nats = [float(r["val_loss"]) for r in results.values()] if with_loss else None
    except (KeyError, TypeError, ValueError):
        raise SystemExit(f"{path}: seed_results entries need a numeric val_bpb") from None
    return dict(nats=nats, bpb=bpb, source=f"{path} ({len(bpb)} seeds)")


def one_sided_p(old: list[float], new: list[float], margin: float) -> float:
    """Welch t-test p-value for mean(old) - mean(new) > margin."""
    diff = statistics.mean(old) - statistics.mean(new) - margin
    var_old, var_new = statistics.variance(old) / len(old), statistics.variance(new) / len(new)
    se = math.sqrt(var_old + var_new)
    if se == 0:
        return 0.0 if diff > 0 else 1.0
    dof = (var_old + var_new) ** 2 / (var_old ** 2 / (len(old) - 1) + var_new ** 2 / (len(new) - 1))
    return float(stats.t.sf(diff / se, dof))


def compare(old: dict, new: dict, margin_nats: float = RULE_MARGIN_NATS) -> dict:
    """Per unit (nats, bpb): means, stds, the bar and the p-value. NEW must come from logs (it has nats)."""
    bpb_per_nat = statistics.mean(b / n for b, n in zip(new["bpb"], new["nats"]))
    if old.get("bytes_per_token"):  # the baseline's own validation bytes per token
        old = dict(old, nats=[b * math.log(2) * old["bytes_per_token"] for b in old["bpb"]])
    elif old.get("nats") is None:
        old = dict(old, nats=[b / bpb_per_nat for b in old["bpb"]])
    out = {}
    for unit in ("nats", "bpb"):
        margin = margin_nats if unit == "nats" else margin_nats * bpb_per_nat
        out[unit] = dict(old_mean=statistics.mean(old[unit]), old_std=statistics.stdev(old[unit]),
                         new_mean=statistics.mean(new[unit]), new_std=statistics.stdev(new[unit]), margin=margin,
                         p_value=one_sided_p(old[unit], new[unit], margin))
    return out


def summarize(old_paths, new_paths, margin_nats: float = RULE_MARGIN_NATS) -> dict:
    return compare(read_side(old_paths, "old"), read_side(new_paths, "new"), margin_nats)


def verdict(result: dict, margin_nats: float, p: float) -> str:
    beats = result["nats"]["p_value"] < p
    return f"verdict: new {'beats' if beats else 'does not beat'} old by {margin_nats} nats at p < {p}"


def report(result: dict, margin_nats: float, p: float) -> str:
    lines = [f"{unit:5s} old {r['old_mean']:.5f} +- {r['old_std']:.5f}  new {r['new_mean']:.5f} +- {r['new_std']:.5f}  "
             f"improvement {r['old_mean'] - r['new_mean']:+.5f} (bar {r['margin']:.5f})  p={r['p_value']:.4g}"
             for unit, r in result.items()]
    return "\n".join(lines + [verdict(result, margin_nats, p)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new", nargs="+", required=True, help="logs of the new configuration, one per seed")
    old = parser.add_mutually_exclusive_group(required=True)
    old.add_argument("--old", nargs="+", help="logs of the baseline configuration, one per seed")
    old.add_argument("--old-submission", type=Path, help="a published record's submission.json (seed_results)")
    old.add_argument("--old-bpb", nargs="+", type=float, help="a published record's per-seed val_bpb")
    old.add_argument("--baseline", choices=sorted(BASELINES), help="the best published result of a tokenizer family")
    parser.add_argument("--margin-nats", type=float, default=RULE_MARGIN_NATS,
                        help=f"the improvement required, in nats (default {RULE_MARGIN_NATS}, the challenge rule)")
    parser.add_argument("--p", type=float, default=RULE_P, help=f"significance threshold (default {RULE_P})")
    args = parser.parse_args(argv)
    if not 0 < args.p < 1:
        parser.error(f"--p must be between 0 and 1, got {args.p}")
    if args.old:
        baseline = read_side(args.old, "old")
    elif args.old_submission:
        baseline = published_scores(args.old_submission)
    elif args.baseline:
        baseline = dict(BASELINES[args.baseline], source=BASELINES[args.baseline]["name"])
    else:
        if len(args.old_bpb) < 2:
            parser.error("--old-bpb needs at least 2 per-seed scores for a standard deviation")
        baseline = dict(nats=None, bpb=args.old_bpb, source=f"{len(args.old_bpb)} published scores")
    result = compare(baseline, read_side(args.new, "new"), args.margin_nats)
    print(f"old: {baseline['source']}")
    print(report(result, args.margin_nats, args.p))
    return 0


if __name__ == "__main__":
    sys.exit(main())
