"""The line formats of a train_gpt.py log (logs/<RUN_ID>.txt), read in one place for the scripts that turn
logs into records, statistics and plots."""

import re

FINAL_LABELS = ("final_prequant_exact", "final_roundtrip_exact", "final_ttt_exact")  # pre-quant, quantized, TTT


def final_score(text: str, label: str) -> tuple[float, float] | None:
    """(val_loss in nats, val_bpb) of a `<label> val_loss:... val_bpb:...` line, or None if the log has none."""
    match = re.search(rf"^{label} val_loss:([0-9.]+) val_bpb:([0-9.]+)", text, re.M)
    return (float(match.group(1)), float(match.group(2))) if match else None


def seed(text: str) -> int | None:
    match = re.search(r"^seed:(\d+)$", text, re.M)
    return int(match.group(1)) if match else None


def resolved_config(text: str) -> dict[str, str]:
    """The hyperparameters: the name:value lines logged before the model_params line (later such lines,
    like first_step_done_since_launch, are results)."""
    return dict(re.findall(r"^([a-z_0-9]+):(\S*)$", text.split("\nmodel_params:", 1)[0], re.M))
