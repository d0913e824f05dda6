"""The record's own training script as an oracle: import it, build its model, map its weights onto ours.

The record (PR #1886, `../shared/reference/record_1886_train_gpt.py`) is run here, never copied. Its
Hyperparameters class reads the environment when the module is executed, and its attention module reads
GATED_ATTN_* when a model is built, so both happen inside `record_env(...)`, which puts the caller's
environment back afterwards (no knob leaks into other tests or into our own Hyperparameters).

Used by tests/test_oracle_train.py (toy size on CPU) and scripts/compare_curves.py (full size on one GPU).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
# ../shared/reference beside the checkout (the worktrees), else shared/reference inside it (a lent GPU's copy);
# compare_curves.py --reference points elsewhere
REFERENCE_DIR = next((d for d in (REPO.parent / "shared" / "reference", REPO / "shared" / "reference")
                      if d.is_dir()), REPO.parent / "shared" / "reference")
RECORD_SCRIPT = "record_1886_train_gpt.py"

# The CPU toy size of reference/README.md, in our field names and in the record's env names.
TOY_SIZES = dict(num_layers=4, model_dim=64, num_heads=4, num_kv_heads=2, rope_dims=8, xsa_last_n=4,
                 loop_start=1, loop_end=2, num_loops=1, parallel_start_layer=3)
RECORD_BASE_ENV = dict(FUSED_CE_ENABLED="0", TORCH_COMPILE_DISABLE="1", TTT_ENABLED="0")


def reference_missing_reason() -> str | None:
    """None when the record script and the FA3 shim are there, else what is missing."""
    for name in (RECORD_SCRIPT, "flash_attn_interface.py"):
        if not (REFERENCE_DIR / name).is_file():
            return f"the record oracle needs {REFERENCE_DIR / name} (the shared reference folder)"
    return None


@contextlib.contextmanager
def record_env(env: dict):
    """Set env (and the FA3 shim on sys.path) for the duration; restore everything afterwards."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update({k: str(v) for k, v in env.items()})
    sys.path.insert(0, str(REFERENCE_DIR))
    try:
        yield
    finally:
        sys.path.remove(str(REFERENCE_DIR))
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def record_env_for(h, **extra) -> dict:
    """The record's env names for the fields of our Hyperparameters h that both scripts have."""
    names = dict(num_layers="NUM_LAYERS", model_dim="MODEL_DIM", num_heads="NUM_HEADS", num_kv_heads="NUM_KV_HEADS",
                 rope_dims="ROPE_DIMS", xsa_last_n="XSA_LAST_N", loop_start="LOOP_START", loop_end="LOOP_END",
                 num_loops="NUM_LOOPS", parallel_start_layer="PARALLEL_START_LAYER", vocab_size="VOCAB_SIZE",
                 train_seq_len="TRAIN_SEQ_LEN", mlp_mult="MLP_MULT", qk_gain_init="QK_GAIN_INIT",
                 logit_softcap="LOGIT_SOFTCAP", rope_base="ROPE_BASE", tied_embed_init_std="TIED_EMBED_INIT_STD",
                 iterations="ITERATIONS", warmdown_frac="WARMDOWN_FRAC", train_batch_tokens="TRAIN_BATCH_TOKENS",
                 ema_decay="EMA_DECAY", grad_clip_norm="GRAD_CLIP_NORM", matrix_lr="MATRIX_LR",
                 scalar_lr="SCALAR_LR", muon_momentum="MUON_MOMENTUM", adam_eps="ADAM_EPS",
                 muon_momentum_warmup_start="MUON_MOMENTUM_WARMUP_START",
                 muon_momentum_warmup_steps="MUON_MOMENTUM_WARMUP_STEPS", seed="SEED")
    env = {record: getattr(h, ours) for ours, record in names.items()}
    for name in ("min_lr", "tied_embed_lr", "muon_wd", "adam_wd", "embed_wd", "beta1", "beta2",
                 "muon_backend_steps", "muon_row_normalize", "enable_looping_at", "gated_attn_init_std",
                 "gated_attn_enabled", "polar_express_ns"):  # the same name in both scripts
        env[name.upper()] = getattr(h, name)
    env = {k: str(int(v)) if isinstance(v, bool) else v for k, v in env.items()}
    env["MLP_MULT"] = float(env["MLP_MULT"])
    env = {k: str(v) for k, v in env.items()}
    env.update(RECORD_BASE_ENV)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def import_record(env: dict, name: str = "record_oracle_module"):
    """The record script as a fresh module, its Hyperparameters read from env (and only env's knobs)."""
    missing = reference_missing_reason()
    if missing:
        raise FileNotFoundError(missing)
    spec = importlib.util.spec_from_file_location(name, REFERENCE_DIR / RECORD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    with record_env(env):
        spec.loader.exec_module(module)
    # its Newton-Schulz is wrapped in torch.compile at import: run the plain function (CPU tests, eager GPU)
    ns = module.zeropower_via_newtonschulz5
    module.zeropower_via_newtonschulz5 = getattr(ns, "_torchdynamo_orig_callable", ns)
    return module


def build_record_model(record, env: dict):
    """The record's GPT with its eager MLP (its fused MLP kernel needs Hopper TMA)."""
    with record_env(env):
        model = record.GPT(record.Hyperparameters())
    for block in model.blocks:
        block.mlp.use_fused = False
    return model


# ---- name mapping: ours <-> the record's state_dict ----

def record_name_map(num_layers: int) -> dict[str, tuple[str, int | None]]:
    """Our parameter name -> (the record's name, index into its bank or None)."""
    n = num_layers
    mapping = {"tok_emb.weight": ("tok_emb.weight", None)}
    for name in ("skip_weights", "skip_gates", "parallel_resid_lambdas", "parallel_post_lambdas"):
        mapping[name] = (name, None)
    for i in range(n):
        b = f"blocks.{i}"
        mapping.update({
            f"{b}.attn.c_q.weight": ("qo_bank", i), f"{b}.attn.proj.weight": ("qo_bank", n + i),
            f"{b}.attn.c_k.weight": ("kv_bank", i), f"{b}.attn.c_v.weight": ("kv_bank", n + i),
            f"{b}.mlp.up.weight": ("mlp_up_bank", i), f"{b}.mlp.down.weight": ("mlp_down_bank", i),
            f"{b}.attn.q_gain": (f"{b}.attn.q_gain", None), f"{b}.attn.gate_weight": (f"{b}.attn.attn_gate_w", None),
        })
        for name in ("attn_scale", "mlp_scale", "resid_mix"):
            mapping[f"{b}.{name}"] = (f"{b}.{name}", None)
    return mapping


def record_view(record_tensors: dict, num_layers: int) -> dict[str, torch.Tensor]:
    """The record's tensors (a state_dict, or its grads by name) under our names."""
    out = {}
    for ours, (theirs, index) in record_name_map(num_layers).items():
        if theirs in record_tensors and record_tensors[theirs] is not None:
            t = record_tensors[theirs]
            out[ours] = t if index is None else t[index]
    return out


def record_grads(record_model) -> dict[str, torch.Tensor]:
    return {name: p.grad for name, p in record_model.named_parameters()}


@torch.no_grad()
def copy_record_weights(record_model, model) -> None:
    """Load the record's current weights into our model (every parameter of ours must be covered)."""
    theirs = record_view(dict(record_model.state_dict()), len(record_model.blocks))
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(theirs))
    if missing:
        raise KeyError(f"no record tensor for our parameters {missing}: extend record_name_map")
    for name, p in params.items():
        p.copy_(theirs[name].to(p.dtype))


# ---- driving the record's own training step ----

@contextlib.contextmanager
def record_muon_in_fp32():
    """The record's Muon casts its gradient, momentum and Newton-Schulz to bf16 with .bfloat16() (on the CPU
    too). For a like-for-like fp32 comparison on the CPU those casts keep fp32 while the oracle steps."""
    original = torch.Tensor.bfloat16
    torch.Tensor.bfloat16 = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.bfloat16 = original


def record_closure(record, outer: str, inner: str, **cells):
    """A function defined inside one of the record's functions (train_model's step_fn, lr_mul,
    training_frac), bound to the given values of its free variables: the record's own code, run as is."""
    code = next(c for c in getattr(record, outer).__code__.co_consts
                if isinstance(c, types.CodeType) and c.co_name == inner)
    closure = tuple(types.CellType(cells[name]) for name in code.co_freevars)
    return types.FunctionType(code, vars(record), inner, None, closure)


class _OneBatchLoader:
    """The record's loader interface, serving one of our packed batches."""

    def __init__(self, batch):
        self.batch = batch

    def next_batch(self, global_tokens, grad_accum_steps):
        b = self.batch
        return b.inputs[None], b.targets[None], b.cu_seqlens, b.max_seqlen


class _OneRankOfEight:
    """The record's Optimizers as one of its 8 ranks sees them: its step_fn (momentum, lr, clip of this rank's
    micro-batch gradient) runs for real; step() only adds the clipped gradients to a running sum (the
    record's all-reduce / reduce-scatter with AVG, done afterwards) and notes their norm."""

    def __init__(self, optimizers, model):
        self.real, self.params = optimizers, list(model.parameters())
        self.optimizer_muon = optimizers.optimizer_muon
        self.grad_sum, self.clipped_norms = None, []

    def __iter__(self):
        return iter(self.real)

    def zero_grad_all(self):
        self.real.zero_grad_all()

    def step(self, distributed=False):
        grads = [p.grad for p in self.params]
        self.clipped_norms.append(torch.nn.utils.get_total_norm(grads).item())
        if self.grad_sum is None:
            self.grad_sum = [g.clone() for g in grads]
        else:
            torch._foreach_add_(self.grad_sum, grads)


def record_train_step(record, model, optimizers, h_record, batches, step: int, lr_scale: float,
                      fp32: bool = False) -> tuple[float, list[float]]:
    """One step of the record at 8 GPUs (one micro-batch per rank, grad_accum_steps=1) on one process: its
    step_fn per batch, then the mean of the clipped gradients into its optimizers. Returns (the mean train
    loss, the clipped gradient norm of each batch)."""
    h_record.grad_accum_steps = 1
    rank = _OneRankOfEight(optimizers, model)
    device = next(model.parameters()).device
    losses = []
    for batch in batches:
        step_fn = record_closure(record, "train_model", "step_fn", optimizers=rank, train_loader=_OneBatchLoader(batch),
                                 model=model, base_model=model, h=h_record, device=device)
        losses.append(step_fn(step, lr_scale))
    for p, g in zip(rank.params, rank.grad_sum):
        p.grad = g / len(batches)
    with record_muon_in_fp32() if fp32 else contextlib.nullcontext():
        optimizers.step(distributed=False)
    return torch.stack(losses).mean().item(), rank.clipped_norms
