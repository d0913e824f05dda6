"""Training-loss curves: train the record's model and ours side by side and compare them, or plot the curves of
any train_gpt.py logs into a PNG (`plot`, e.g. for a record's README).

    # plot: the curves of one or several logs, each labelled with its seed and final val_bpb
    python scripts/compare_curves.py plot logs/seed42.txt logs/seed314.txt -o loss.png
    python scripts/compare_curves.py plot logs/*.txt --x time --ymax 4 -o loss_vs_time.png

`plot` reads the `step:N/M train_loss:L train_time:Tms` lines (all-rank mean loss) of each log, and labels each
curve with its seed and, when the log has them, the final pre-quant / quantized / post-TTT val_bpb. --x step
(default) or time (seconds of the timed training region). The depth-recurrence switch is marked on each curve.

The comparison trains both from the same initial weights on the same batches, and scores both final (EMA)
models with both evaluators, ours and the record's eval_val (issue 13 item 3, issue 25); it exits 1 when a
target is missed (train loss within 1% at every logged step, val_bpb within 0.003 under each evaluator):

    # one GPU, full size, proxy2 (unpack its train shards first: xz -dk DATA/fineweb_train_*.bin.xz)
    python scripts/compare_curves.py --data DATA --tokenizer TOKENIZER --steps 300 --out-dir logs/compare
    # CPU, toy size, a few steps (what the test runs)
    python scripts/compare_curves.py --toy --data ../shared/data/proxy/datasets/proxy_sp8192 --steps 3

The record (--reference, #1886's script by default, through scripts/record_oracle.py) is built as its
train_model builds it (bf16 embedding and fp32 other weights on the GPU), seeded with --seed; its initial
weights are copied into ours. Each step both train on the same 8 micro-batches of our loader with the
step-based schedule (no wallclock cap, TTT off, eager): the record through its own step_fn and Optimizers,
run as one of its 8 GPUs per micro-batch (its 8-GPU gradient clipping); ours through train_step. Each side
keeps an EMA (--ema-decay; our EMA class on both sides: tests/test_oracle_loop.py holds it to the record's
train_model). At the end both EMA models are scored, before quantization, by our evaluator (the record's weights
copied into a GPT of ours) and by the record's eval_val (our weights copied into a GPT of the record's), on the
val tokens cut to whole batches of the record's evaluator, so that both score the same targets.

Prints both train losses and their ratio at each logged step, the worst ratio, and the four val_bpb. Writes
OUT_DIR/record.txt and OUT_DIR/ours.txt in train_gpt.py's log format: `python scripts/compare_curves.py plot
OUT_DIR/record.txt OUT_DIR/ours.txt -o compare.png` draws them.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
import golflog  # noqa: E402
import record_oracle as ro  # noqa: E402
import train_gpt as tg  # noqa: E402

MICRO_BATCHES = 8  # the record's 8 GPUs, one micro-batch each
TOY = dict(ro.TOY_SIZES, train_seq_len=64, eval_seq_len=64, train_batch_tokens=MICRO_BATCHES * 128,
           val_batch_tokens=2048)
LOSS_RATIO_TARGET = 1.01  # worst train-loss ratio, either way, at the logged steps
BPB_TARGET = 0.003  # |ours - record| val_bpb under each evaluator (issue 23)
DEFAULT_TOKENIZER = REPO.parent / "shared" / "data" / "tokenizers" / "fineweb_8192_bpe.model"
STEP_LINE = re.compile(r"^step:(\d+)/\d+ train_loss:([0-9.naninf]+) train_time:(\d+)ms", re.M)
SHORT_NAMES = dict(zip(golflog.FINAL_LABELS, ("pre-quant", "quantized", "TTT")))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with fineweb_{train,val}_*.bin (unpacked proxy2)")
    parser.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-tokens", type=int, default=196_608, help="tokens per step (8 micro-batches)")
    parser.add_argument("--ema-decay", type=float, default=0.98)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--val-tokens", type=int, default=0, help="score the first N val tokens (0: all)")
    parser.add_argument("--out-dir", type=Path, default=Path("logs/compare"))
    parser.add_argument("--toy", action="store_true", help="toy model size (CPU test)")
    parser.add_argument("--reference", type=Path, default=ro.RECORD_1886,
                        help="the record's script (or the folder of record_1886_train_gpt.py); the FA3 shim "
                             "beside it or one folder up")
    parser.add_argument("--ours-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting of ours for an A/B against the record, e.g. EMBED_FP32=1 (repeatable)")
    parser.add_argument("--ours-autocast", action="store_true",
                        help="run ours under bf16 autocast with its Triton kernels off, as the record runs (its "
                             "norms then give an fp32 residual stream; ours alone keeps it bf16)")
    return parser.parse_args(argv)


def our_hyperparameters(args, cuda: bool) -> tg.Hyperparameters:
    env = dict(DATA_PATH=args.data, TOKENIZER_PATH=args.tokenizer, SEED=args.seed, ITERATIONS=args.steps,
               TRAIN_BATCH_TOKENS=args.batch_tokens, EMA_DECAY=args.ema_decay, MAX_WALLCLOCK_SECONDS=0,
               VAL_MAX_TOKENS=args.val_tokens, TTT_ENABLED=0, COMPILE=0,
               FUSED_CE_ENABLED=int(cuda), FUSED_MLP_ENABLED=int(cuda))
    if args.toy:
        env.update({k.upper(): v for k, v in TOY.items()})
    if args.ours_autocast:
        env.update(FUSED_CE_ENABLED=0, FUSED_MLP_ENABLED=0)
    for setting in args.ours_env:
        name, sep, value = setting.partition("=")
        if not sep:
            raise SystemExit(f"--ours-env {setting!r}: expected NAME=VALUE, e.g. EMBED_FP32=1")
        env[name] = value
    return tg.load_hyperparameters({k: str(v) for k, v in env.items()})


def build_record(h: tg.Hyperparameters, device: torch.device, cuda: bool, script: Path = ro.RECORD_1886):
    """(record module, its Hyperparameters, its model on device, its Optimizers), the model as its
    train_model builds it."""
    env = ro.record_env_for(h, script, MAX_WALLCLOCK_SECONDS=0, FUSED_CE_ENABLED=int(cuda))
    record = ro.import_record(env, script)
    h_record = record.Hyperparameters()
    torch.manual_seed(h.seed)
    with ro.record_env(env, script):
        model = record.GPT(h_record).to(device)
    if cuda:  # its train_model: everything bf16, then the banks, scalars and gates back to fp32
        model.bfloat16()
        record.restore_fp32_params(model)
    else:  # its fused MLP kernel needs a Hopper GPU
        for block in model.blocks:
            block.mlp.use_fused = False
    return record, h_record, model, record.Optimizers(h_record, model)


def build_ours(h: tg.Hyperparameters, device: torch.device, weights_from) -> tg.GPT:
    model = tg.GPT(h).to(device)
    model.configure_kernels(device, h.fused_ce_enabled, h.fused_mlp_enabled, h.fused_qk_enabled)
    ro.copy_record_weights(weights_from, model)
    return model


def record_copy_of(ours: tg.GPT, record, h: tg.Hyperparameters, script: Path, device, cuda: bool):
    """A GPT of the record's holding our weights, for its evaluator."""
    env = ro.record_env_for(h, script, MAX_WALLCLOCK_SECONDS=0, FUSED_CE_ENABLED=int(cuda))
    model = ro.build_record_model(record, env, script).to(device)
    ro.copy_our_weights(ours, model)
    return model


class _StepBatches:
    """train_step's loader interface over one step's micro-batches (the ones the record got too)."""
    accum = MICRO_BATCHES

    def __init__(self, batches):
        self.batches = batches

    def batch(self, step, micro_step):
        return self.batches[micro_step]


class RunLog:
    """A train_gpt.py-format log: `plot` and golflog read it."""

    def __init__(self, path: Path, seed: int, steps: int):
        self.path, self.steps, self.lines, self.seconds = path, steps, [f"seed:{seed}"], 0.0

    def step(self, step: int, loss: float) -> None:
        self.lines.append(f"step:{step}/{self.steps} train_loss:{loss:.4f} train_time:{self.seconds * 1000:.0f}ms")

    def write(self, extra: list[str]) -> None:
        self.path.write_text("\n".join(self.lines + extra) + "\n", encoding="utf-8")


def timed(fn, cuda: bool):
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def missed_targets(worst_ratio: float, scores: dict) -> list[str]:
    """The targets the comparison missed; scores: evaluator -> (record's bpb, ours)."""
    missed = [f"worst train-loss ratio {worst_ratio:.4f} > {LOSS_RATIO_TARGET}"] if worst_ratio > LOSS_RATIO_TARGET else []
    missed += [f"{judge} evaluator: |ours - record| val_bpb {abs(o - r):.5f} > {BPB_TARGET}"
               for judge, (r, o) in scores.items() if not abs(o - r) <= BPB_TARGET]  # a NaN misses too
    return missed


def record_val_tokens(tokens, h_record):
    """The val tokens cut to whole batches of the record's eval_val (which drops a partial last batch)."""
    seq = h_record.eval_seq_len
    batch_seqs = h_record.val_batch_tokens // (h_record.world_size * h_record.grad_accum_steps) // seq
    whole = (len(tokens) - 1) // seq // batch_seqs * batch_seqs
    if whole == 0:
        raise SystemExit(f"{len(tokens)} val tokens hold no whole batch of the record's evaluator "
                         f"({batch_seqs} x {seq} tokens): raise --val-tokens")
    return tokens[:whole * seq + 1]


# ---- plot: the curves of train_gpt.py logs ----

def read_curve(path: Path) -> dict:
    """A log's training-loss points (step, loss, seconds), seed, final val_bpbs and recurrence switch."""
    text = golflog.read_log(path)
    points = [(int(s), float(loss), int(ms) / 1000) for s, loss, ms in STEP_LINE.findall(text)]
    if not points:
        raise SystemExit(f"{path}: no 'step:N/M train_loss:... train_time:...ms' lines: not a train_gpt.py training "
                         "log (an EVAL_ONLY or QUANTIZE_ONLY run, or one that crashed before its first step?)")
    seed = golflog.seed(text)
    finals = {}
    for label, short in SHORT_NAMES.items():
        score = golflog.final_score(text, label)
        if score:
            finals[short] = score[1]
    loop = re.search(r"^depth_recurrence:on step:(\d+) train_time:(\d+)ms", text, re.M)
    return dict(path=Path(path), points=points, seed=seed if seed is not None else "?", finals=finals,
                loop=(int(loop.group(1)), int(loop.group(2)) / 1000) if loop else None)


def plot(curves: list[dict], out: Path, x: str = "step", ymax: float | None = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
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


def plot_main(argv) -> int:
    parser = argparse.ArgumentParser(prog="compare_curves.py plot", description="the training-loss curves of "
                                     "train_gpt.py logs in one PNG (see compare_curves.py --help)")
    parser.add_argument("logs", nargs="+", type=Path, help="train_gpt.py logs (logs/<RUN_ID>.txt)")
    parser.add_argument("-o", "--output", type=Path, default=Path("loss.png"), help="PNG to write")
    parser.add_argument("--x", choices=["step", "time"], default="step")
    parser.add_argument("--ymax", type=float, default=None, help="clip the y axis (early losses are ~9)")
    args = parser.parse_args(argv)
    out = plot([read_curve(p) for p in args.logs], args.output, args.x, args.ymax)
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plot"]:
        return plot_main(argv[1:])
    args = parse_args(argv)
    script = ro.script_in(args.reference).resolve()
    missing = ro.reference_missing_reason(script)
    if missing:
        raise SystemExit(missing)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    h = our_hyperparameters(args, cuda)
    accum = tg.validate_hyperparameters(h, world_size=1)
    ctx = tg.DistContext(device=device)
    record, h_record, theirs, record_opt = build_record(h, device, cuda, script)
    ours = build_ours(h, device, theirs)
    our_opt = tg.Optimizers(ours, h, ctx)
    loader = tg.TrainLoader(h, ctx, accum)
    lr_mul = ro.record_closure(record, "train_model", "lr_mul", h=h_record)
    training_frac = ro.record_closure(record, "train_model", "training_frac", h=h_record, max_wallclock_ms=None)
    emas = tg.EMA(theirs, h.ema_decay), tg.EMA(ours, h.ema_decay)
    our_precision = lambda: torch.autocast("cuda", torch.bfloat16, enabled=cuda and args.ours_autocast)  # noqa: E731
    args.out_dir.mkdir(parents=True, exist_ok=True)
    logs = RunLog(args.out_dir / "record.txt", h.seed, h.iterations), RunLog(args.out_dir / "ours.txt", h.seed,
                                                                            h.iterations)
    print(f"ours: autocast {int(cuda and args.ours_autocast)} settings {args.ours_env or 'defaults'}")
    print(f"device:{device} steps:{h.iterations} batch_tokens:{h.train_batch_tokens} ema_decay:{h.ema_decay} "
          f"record_params:{sum(p.numel() for p in theirs.parameters())}")
    print(f"{'step':>6} {'record':>9} {'ours':>9} {'ours/record':>12}")
    worst = 1.0
    # ---- training: the same micro-batches, the same step-based schedule ----
    for step in range(h.iterations):
        frac, progress = training_frac(step, 0.0), tg.training_progress(step, 0.0, h)
        switches = ((theirs, "looping_active", frac, h_record.enable_looping_at, logs[0]),
                    (ours, "looping", progress, h.enable_looping_at, logs[1]))
        for model, flag, at, threshold, log in switches:  # each script's own recurrence switch
            if h.num_loops > 0 and not getattr(model, flag) and at >= threshold:
                setattr(model, flag, True)
                log.lines.append(f"depth_recurrence:on step:{step} train_time:{log.seconds * 1000:.0f}ms")
        batches = [loader.batch(step, m) for m in range(MICRO_BATCHES)]
        (loss_r, _), sec_r = timed(lambda: ro.record_train_step(record, theirs, record_opt, h_record, batches, step,
                                                                 lr_mul(frac), fp32=not cuda), cuda)
        with our_precision():
            loss_o, sec_o = timed(lambda: tg.train_step(ours, ours, _StepBatches(batches), our_opt, step,
                                                        tg.lr_multiplier(progress, h)).item(), cuda)
        for ema in emas:
            ema.update()
        logs[0].seconds += sec_r
        logs[1].seconds += sec_o
        done = step + 1
        if done % args.log_every == 0 or done <= 5 or done == h.iterations:
            logs[0].step(done, loss_r)
            logs[1].step(done, loss_o)
            worst = max(worst, loss_o / loss_r, loss_r / loss_o)
            print(f"{done:>6} {loss_r:>9.4f} {loss_o:>9.4f} {loss_o / loss_r:>12.4f}", flush=True)
    # ---- both evaluators for both final EMA models ----
    tables = tg.build_byte_tables(tg.load_tokenizer(h.tokenizer_path, h.vocab_size))
    h_record.grad_accum_steps = MICRO_BATCHES  # its training ran as one of 8 ranks; its evaluator as 1 GPU
    val_tokens, tables = tg.load_val_data(h, tables)  # CaseOps: the byte sidecar counts the bytes
    val_tokens = record_val_tokens(val_tokens, h_record)
    val_bytes = None if tables.sidecar is None else tables.sidecar[:len(val_tokens)].numpy()
    tables = tables.to(device)
    record_val = ro.RecordValData(record, val_tokens, h.tokenizer_path, h.vocab_size, device, val_bytes)
    record.BOS_ID = h.bos_id
    scores = {"our": [], "record's": []}
    for ema, model, log in zip(emas, (theirs, ours), logs):
        ema.copy_to(model)
        judge = build_ours(h, device, theirs) if model is theirs else ours
        judge.looping = ours.looping
        (val_loss, val_bpb, _), seconds = timed(lambda: tg.evaluate(judge, val_tokens, tables, h, ctx), cuda)
        scores["our"].append(val_bpb)
        record_judge = theirs if model is theirs else record_copy_of(ours, record, h, script, device, cuda)
        record_judge.looping_active = ours.looping
        with torch.autocast("cuda", torch.bfloat16, enabled=cuda):
            _, record_bpb = record.eval_val(h_record, device, record_val, record_judge)
        scores["record's"].append(float(record_bpb))
        log.write([f"train_time:{log.seconds * 1000:.0f}ms steps:{h.iterations}",
                   f"final_prequant_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f} eval_seconds:{seconds:.1f}",
                   f"record_evaluator val_bpb:{record_bpb:.8f}"])
    print(f"worst train-loss ratio (either way): {worst:.4f} (target <= {LOSS_RATIO_TARGET})")
    for judge, (r, o) in scores.items():
        print(f"prequant val_bpb ({judge} evaluator, EMA weights, {len(val_tokens) - 1} targets): record {r:.5f} "
              f"ours {o:.5f} ours-record {o - r:+.5f} (target |diff| <= {BPB_TARGET})")
    print(f"train seconds (eager): record {logs[0].seconds:.1f} ours {logs[1].seconds:.1f}")
    if cuda:
        print(f"peak_memory_allocated:{torch.cuda.max_memory_allocated() / 2**30:.2f}GiB")
    print(f"logs: {logs[0].path} {logs[1].path}")
    missed = missed_targets(worst, scores)
    for line in missed:
        print(f"TARGET MISSED: {line}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
