"""The line formats of a train_gpt.py log (logs/<RUN_ID>.txt), read in one place for the scripts that turn
logs into records, statistics and plots."""

import re
from pathlib import Path

FINAL_LABELS = ("final_prequant_exact", "final_roundtrip_exact", "final_ttt_exact")  # pre-quant, quantized, TTT
PER_SEED_FIELDS = {"seed", "run_id", "artifact_path"}  # config fields that may differ between seeds of one config
NON_FINITE = re.compile(r"^(?:step:\d+/\d+ train_loss|\S*val_loss|\S*val_bpb)[^\n]*?:(?:[-+]?(?:nan|inf))\b",
                        re.M | re.I)


def read_log(path: Path) -> str:
    """The text of a log, or SystemExit naming why it cannot be one (missing, a folder, binary, not UTF-8)."""
    path = Path(path)
    if not path.exists():
        raise SystemExit(f"{path}: no such file (give the logs/<RUN_ID>.txt of a train_gpt.py run)")
    if not path.is_file():
        raise SystemExit(f"{path}: not a file (give the logs/<RUN_ID>.txt of a train_gpt.py run, not a folder)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        raise SystemExit(f"{path}: binary data, not a train_gpt.py log (an artifact or an archive?)")
    return text


def final_score(text: str, label: str) -> tuple[float, float] | None:
    """(val_loss in nats, val_bpb) of a `<label> val_loss:... val_bpb:...` line, or None if the log has none."""
    match = re.search(rf"^{label} val_loss:([0-9.]+) val_bpb:([0-9.]+)", text, re.M)
    return (float(match.group(1)), float(match.group(2))) if match else None


def seed(text: str) -> int | None:
    match = re.search(r"^seed:(\d+)$", text, re.M)
    return int(match.group(1)) if match else None


def resolved_config(text: str) -> dict[str, str]:
    """The hyperparameters: the name:value lines logged before the model_params line (later such lines,
    like first_step_done_since_launch, are results), after the embedded sources."""
    head = run_lines(text).split("\nmodel_params:", 1)[0]
    return dict(re.findall(r"^([a-z_0-9]+):(\S*)$", head, re.M))


def config_differences(a: dict[str, str], b: dict[str, str]) -> list[str]:
    """The config fields (other than the per-seed ones) whose values differ between two logs."""
    return sorted(k for k in (a.keys() | b.keys()) - PER_SEED_FIELDS if a.get(k) != b.get(k))


def embedded_sources(text: str) -> dict[str, str]:
    """{file name: source} of the code files the run logged first (`==== source of NAME ====` blocks)."""
    sources = {}
    for match in re.finditer(r"^==== source of (\S+) ====\n", text, re.M):
        name = match.group(1)
        end = text.find(f"\n==== end of {name} ====\n", match.end())
        if end >= 0 and name not in sources:
            sources[name] = text[match.end():end]
    return sources


def run_lines(text: str) -> str:
    """The log without the embedded sources: what the run itself printed."""
    for name, source in embedded_sources(text).items():
        text = text.replace(f"==== source of {name} ====\n{source}\n==== end of {name} ====\n", "", 1)
    return text


def failure(text: str) -> str | None:
    """Why a log is not a finished, healthy run (interrupted, non-finite loss, an ERROR line), or None."""
    lines = run_lines(text)
    for pattern, what in ((r"^[^\n]*\binterrupted\b[^\n]*$", "the run was interrupted"),
                          (r"^[^\n]*non-finite[^\n]*$", "the run stopped on a non-finite loss"),
                          (r"^ERROR:[^\n]*$", "the run reported an error")):
        match = re.search(pattern, lines, re.M | re.I)
        if match:
            return f"{what} ({match.group(0).strip()[:160]})"
    match = NON_FINITE.search(lines)
    if match:
        return f"a NaN or infinite value ({match.group(0).strip()[:160]})"
    return None
