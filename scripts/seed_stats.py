"""Seed statistics for the challenge's record bar: does configuration NEW beat OLD by at least 0.005 nats?

    python scripts/seed_stats.py --old logs/base_s1.txt logs/base_s2.txt logs/base_s3.txt \
                                 --new logs/mine_s1.txt logs/mine_s2.txt logs/mine_s3.txt

Reads each train_gpt.py log's final score (final_ttt_exact, else final_roundtrip_exact), checks that the logs of
one side differ only in SEED/RUN_ID, and prints mean and std per side, in nats (val_loss) and bpb, with the
one-sided Welch t-test p-value for H1: mean_old - mean_new > margin (default 0.005 nats, the challenge's bar;
the bpb margin scales it by the logs' bytes-per-token ratio).
"""

import argparse
import math
import statistics
import sys
from pathlib import Path

from scipy import stats

import golflog

SCORE_LABELS = ("final_ttt_exact", "final_roundtrip_exact")
PER_SEED_FIELDS = {"seed", "run_id", "artifact_path"}


def read_log(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
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
    base = {k: v for k, v in runs[0]["config"].items() if k not in PER_SEED_FIELDS}
    for run in runs[1:]:
        other = {k: v for k, v in run["config"].items() if k not in PER_SEED_FIELDS}
        diff = sorted(k for k in base.keys() | other.keys() if base.get(k) != other.get(k))
        if diff:
            raise SystemExit(f"--{side} logs are not seeds of one configuration: {run['path']} differs from "
                             f"{runs[0]['path']} in {', '.join(diff[:8])}")
    if len({r["label"] for r in runs}) > 1:
        raise SystemExit(f"--{side} logs mix TTT and non-TTT final scores")


def one_sided_p(old: list[float], new: list[float], margin: float) -> float:
    """Welch t-test p-value for mean(old) - mean(new) > margin."""
    diff = statistics.mean(old) - statistics.mean(new) - margin
    var_old, var_new = statistics.variance(old) / len(old), statistics.variance(new) / len(new)
    se = math.sqrt(var_old + var_new)
    if se == 0:
        return 0.0 if diff > 0 else 1.0
    dof = (var_old + var_new) ** 2 / (var_old ** 2 / (len(old) - 1) + var_new ** 2 / (len(new) - 1))
    return float(stats.t.sf(diff / se, dof))


def summarize(old_paths, new_paths, margin_nats: float) -> dict:
    sides = {}
    for side, paths in (("old", old_paths), ("new", new_paths)):
        if len(paths) < 2:
            raise SystemExit(f"--{side} needs at least 2 logs (seeds) for a standard deviation")
        runs = [read_log(Path(p)) for p in paths]
        check_same_config(runs, side)
        sides[side] = runs
    out = {}
    for unit in ("nats", "bpb"):
        old = [r[unit] for r in sides["old"]]
        new = [r[unit] for r in sides["new"]]
        ratio = statistics.mean(r["bpb"] / r["nats"] for r in sides["old"] + sides["new"])
        margin = margin_nats if unit == "nats" else margin_nats * ratio
        out[unit] = dict(old_mean=statistics.mean(old), old_std=statistics.stdev(old), new_mean=statistics.mean(new),
                         new_std=statistics.stdev(new), margin=margin, p_value=one_sided_p(old, new, margin))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", nargs="+", required=True, help="logs of the baseline configuration, one per seed")
    parser.add_argument("--new", nargs="+", required=True, help="logs of the new configuration, one per seed")
    parser.add_argument("--margin-nats", type=float, default=0.005)
    args = parser.parse_args(argv)
    result = summarize(args.old, args.new, args.margin_nats)
    for unit, r in result.items():
        print(f"{unit:5s} old {r['old_mean']:.5f} +- {r['old_std']:.5f}  new {r['new_mean']:.5f} +- {r['new_std']:.5f}  "
              f"improvement {r['old_mean'] - r['new_mean']:+.5f} (bar {r['margin']:.5f})  p={r['p_value']:.4g}")
    verdict = "beats" if result["nats"]["p_value"] < 0.01 else "does not beat"
    print(f"verdict: new {verdict} old by {args.margin_nats} nats at p < 0.01")
    return 0


if __name__ == "__main__":
    sys.exit(main())
