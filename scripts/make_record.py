"""Build a record folder in the challenge's format from train_gpt.py logs (one per seed).

    python scripts/make_record.py --name SP8192_Golfrun --author "Ada" --github-id ada \
        logs/seed42.txt logs/seed314.txt logs/seed1337.txt

Writes records/track_10min_16mb/<date>_<name>/: README.md (a results table per seed: steps, train time,
pre-quant / quantized / post-TTT val_bpb, eval time, artifact bytes), submission.json (name, author, github_id,
date, blurb, mean val_loss / val_bpb, bytes_total, bytes_code), the logs, and train_gpt.py + kernels.py.
Refuses a run whose log shows an artifact over 16,000,000 bytes, training over 600 s or evaluation over 600 s.
"""

import argparse
import datetime
import json
import re
import shutil
import statistics
import sys
from pathlib import Path

import golflog

REPO = Path(__file__).resolve().parents[1]
LIMITS = dict(bytes_total=16_000_000, train_ms=600_000, eval_ms=600_000)


def _required(value, path: Path, what: str):
    if value is None:
        raise SystemExit(f"{path}: no {what} in the log (crashed or unfinished run?)")
    return value


def _find(text: str, pattern: str, path: Path, what: str) -> str:
    return _required(re.search(pattern, text, re.M), path, what).group(1)


def parse_log(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    run = dict(log=path, seed=_required(golflog.seed(text), path, "seed"))
    run["steps"] = int(_find(text, r"^train_time:\d+ms steps:(\d+)", path, "train_time line"))
    run["train_ms"] = int(_find(text, r"^train_time:(\d+)ms steps:", path, "train_time line"))
    scores = {label: _required(golflog.final_score(text, label), path, label) for label in golflog.FINAL_LABELS}
    run["prequant"], run["quantized"], run["ttt"] = (scores[label][1] for label in golflog.FINAL_LABELS)
    run["val_loss"] = scores["final_ttt_exact"][0]
    run["eval_ms"] = int(_find(text, r"^eval_time:(\d+)ms \(", path, "total eval_time line"))
    run["bytes_total"] = int(_find(text, r"^artifact_total_bytes:(\d+)", path, "artifact_total_bytes"))
    run["bytes_code"] = int(_find(text, r"code_compressed_bytes:(\d+)", path, "code_compressed_bytes"))
    return run


def check_limits(run: dict) -> None:
    for key, limit in LIMITS.items():
        if run[key] > limit:
            raise SystemExit(f"{run['log']}: {key} {run[key]:,} is over the challenge limit {limit:,}: not a valid record")


def readme(name: str, blurb: str, runs: list[dict]) -> str:
    rows = "\n".join(f"| {r['seed']} | {r['steps']} | {r['train_ms'] / 1000:.1f} | {r['prequant']:.5f} | "
                     f"{r['quantized']:.5f} | {r['ttt']:.5f} | {r['eval_ms'] / 1000:.1f} | {r['bytes_total']:,} |"
                     for r in runs)
    mean = statistics.mean(r["ttt"] for r in runs)
    std = statistics.stdev(r["ttt"] for r in runs) if len(runs) > 1 else 0.0
    return (f"# {name}\n\n{blurb}\n\n| seed | steps | train s | pre-quant bpb | quantized bpb | post-TTT bpb | "
            f"eval s | artifact bytes |\n|---|---|---|---|---|---|---|---|\n{rows}\n\n"
            f"Mean post-TTT val_bpb: **{mean:.5f}** (std {std:.5f}, {len(runs)} seeds). Artifact bytes = compressed "
            "model + brotli-compressed train_gpt.py and kernels.py.\n")


def make_record(logs, name, author, github_id, blurb, out_root: Path, date: str) -> Path:
    runs = sorted((parse_log(Path(p)) for p in logs), key=lambda r: r["seed"])
    for run in runs:
        check_limits(run)
    folder = out_root / "track_10min_16mb" / f"{date}_{name}"
    folder.mkdir(parents=True, exist_ok=False)
    for run in runs:
        shutil.copy(run["log"], folder / f"train_seed{run['seed']}.log")
    for code in ("train_gpt.py", "kernels.py"):
        shutil.copy(REPO / code, folder / code)
    (folder / "README.md").write_text(readme(name, blurb, runs))
    submission = dict(name=name, author=author, github_id=github_id, date=date, blurb=blurb,
                      val_loss=round(statistics.mean(r["val_loss"] for r in runs), 8),
                      val_bpb=round(statistics.mean(r["ttt"] for r in runs), 8),
                      bytes_total=max(r["bytes_total"] for r in runs), bytes_code=max(r["bytes_code"] for r in runs),
                      seeds=[r["seed"] for r in runs])
    (folder / "submission.json").write_text(json.dumps(submission, indent=2) + "\n")
    return folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", help="train_gpt.py logs, one per seed")
    parser.add_argument("--name", required=True)
    parser.add_argument("--author", required=True)
    parser.add_argument("--github-id", required=True)
    parser.add_argument("--blurb", default="golfrun: the 'Fused softcap CE + TTT weight decay 2.0' stack.")
    parser.add_argument("--out", type=Path, default=REPO / "records")
    parser.add_argument("--date", default=datetime.date.today().isoformat())
    args = parser.parse_args(argv)
    print(make_record(args.logs, args.name, args.author, args.github_id, args.blurb, args.out, args.date))
    return 0


if __name__ == "__main__":
    sys.exit(main())
