"""Plot the training-loss curves of one or several train_gpt.py runs into a PNG (for a record's README).

    python scripts/plot_loss.py logs/seed42.txt logs/seed314.txt -o loss.png
    python scripts/plot_loss.py logs/*.txt --x time --ymax 4 -o loss_vs_time.png

Reads the `step:N/M train_loss:L train_time:Tms` lines (all-rank mean loss) of each log, and labels each curve
with its seed and, when the log has them, the final pre-quant / quantized / post-TTT val_bpb. --x step (default)
or time (seconds of the timed training region). The depth-recurrence switch is marked on each curve.
"""

import argparse
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

import golflog  # noqa: E402

STEP_LINE = re.compile(r"^step:(\d+)/\d+ train_loss:([0-9.naninf]+) train_time:(\d+)ms", re.M)
SHORT_NAMES = dict(zip(golflog.FINAL_LABELS, ("pre-quant", "quantized", "TTT")))


def read_log(path: Path) -> str:
    """The log's text, or one line that says why this path is not a log."""
    if path.is_dir():
        raise SystemExit(f"{path}: is a folder; give train_gpt.py log files (logs/<RUN_ID>.txt)")
    if not path.is_file():
        raise SystemExit(f"{path}: no such log file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SystemExit(f"{path}: not a text file (binary data; an artifact?): give a train_gpt.py log, "
                         "logs/<RUN_ID>.txt") from None


def read_curve(path: Path) -> dict:
    text = read_log(path)
    points = [(int(s), float(loss), int(ms) / 1000) for s, loss, ms in STEP_LINE.findall(text)]
    if not points:
        raise SystemExit(f"{path}: no 'step:N/M train_loss:... train_time:...ms' lines: not a train_gpt.py "
                         "training log (an EVAL_ONLY run, or one that crashed before its first step?)")
    seed = golflog.seed(text)
    finals = {}
    for label, short in SHORT_NAMES.items():
        score = golflog.final_score(text, label)
        if score:
            finals[short] = score[1]
    loop = re.search(r"^depth_recurrence:on step:(\d+) train_time:(\d+)ms", text, re.M)
    return dict(path=path, points=points, seed=seed if seed is not None else "?", finals=finals,
                loop=(int(loop.group(1)), int(loop.group(2)) / 1000) if loop else None)


def plot(curves: list[dict], out: Path, x: str = "step", ymax: float | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=120)
    for curve in curves:
        xs = [p[0] if x == "step" else p[2] for p in curve["points"]]
        ys = [p[1] for p in curve["points"]]
        finals = ", ".join(f"{k} {v:.4f}" for k, v in curve["finals"].items())
        label = f"{curve['path'].stem} (seed {curve['seed']})" + (f": {finals} bpb" if finals else "")
        (line,) = ax.plot(xs, ys, label=label, linewidth=1.2, marker="." if len(xs) < 40 else None)
        if curve["loop"]:
            ax.axvline(curve["loop"][0 if x == "step" else 1], color=line.get_color(), linestyle=":", linewidth=0.8)
    ax.set_xlabel("step" if x == "step" else "training seconds")
    ax.set_ylabel("train loss (nats/token, mean over ranks)")
    ax.set_title("train_gpt.py training loss (dotted: depth recurrence switches on)")
    if ymax is not None:
        ax.set_ylim(top=ymax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", type=Path, help="train_gpt.py logs (logs/<RUN_ID>.txt)")
    parser.add_argument("-o", "--output", type=Path, default=Path("loss.png"), help="PNG to write")
    parser.add_argument("--x", choices=["step", "time"], default="step")
    parser.add_argument("--ymax", type=float, default=None, help="clip the y axis (early losses are ~9)")
    args = parser.parse_args(argv)
    out = plot([read_curve(p) for p in args.logs], args.output, args.x, args.ymax)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
