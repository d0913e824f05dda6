"""A record's own training script as an oracle: import it, build its model, map weights between it and ours.

A record is run here, never copied. The one adapter for every script and test that drives a record's script:
tests/test_oracle_train.py (toy size on CPU), scripts/compare_curves.py, bench_ttt_vs_reference.py,
profile_vs_reference.py and bench_kernels.py. A record script's Hyperparameters class reads the environment when
the module is executed, and its attention module reads GATED_ATTN_* when a model is built, so both happen inside
`record_env(...)`, which puts the caller's environment and sys.path back afterwards (no knob leaks into other
tests or into our own Hyperparameters). #2135's model reads SMEAR_GATE_BOS_FIX each time it runs: callers run
its forward (and its training step) inside record_env too.

Which record: every function takes the script's path (`script=`), RECORD_1886 by default; RECORD_2135's script
imports the same FA3 shim, one folder up (`shim_dir` finds it). The environment a record is given is derived
from our config (`record_env_for`): every setting of ours whose name the record's script reads, so a setting
added to both scripts is passed without a list to update here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import re
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train_gpt as tg  # noqa: E402

# ../shared/reference beside the checkout (the worktrees), else shared/reference inside it (a lent GPU's copy)
REFERENCE_DIR = next((d for d in (REPO.parent / "shared" / "reference", REPO / "shared" / "reference")
                      if d.is_dir()), REPO.parent / "shared" / "reference")
RECORD_1886 = REFERENCE_DIR / "record_1886_train_gpt.py"
RECORD_2135 = REFERENCE_DIR / "record_2135" / "train_gpt.py"
RECORDS = {"1886": RECORD_1886, "2135": RECORD_2135}  # our RECIPE -> the record script it reproduces
SHIM = "flash_attn_interface.py"  # FA3's Python API on torch (the records import FA3)
ENV_READ = re.compile(r"""os\.environ\.get\(\s*["']([A-Z][A-Z0-9_]*)["']""")

# The CPU toy size, in our field names: two parallel layers (3, 4: a lane bug can hide behind one) and two extra
# passes of the looped layers 1-2, as both records run (num_loops 2).
TOY_SIZES = dict(num_layers=5, model_dim=64, num_heads=4, num_kv_heads=2, rope_dims=8, xsa_last_n=5,
                 loop_start=1, loop_end=2, num_loops=2, parallel_start_layer=3)
# The oracle's own choices (eager, no fused CE kernel, no TTT at the end of its training); callers override.
RECORD_BASE_ENV = dict(FUSED_CE_ENABLED="0", TORCH_COMPILE_DISABLE="1", TTT_ENABLED="0")


def script_in(path: Path) -> Path:
    """A record script given as itself, or as the folder that holds the #1886 script (older command lines)."""
    path = Path(path)
    return path / RECORD_1886.name if path.is_dir() else path


def shim_dir(script: Path = RECORD_1886) -> Path:
    """The folder holding the FA3 shim: the script's own (#1886) or the one above it (#2135)."""
    script = Path(script).resolve()
    return next((d for d in (script.parent, script.parent.parent) if (d / SHIM).is_file()), script.parent)


TOY_MICRO_TOKENS = 96  # toy micro-batch (one "rank" of the record's 8)


def toy_packed_batch(seed: int, h, n_tokens: int = TOY_MICRO_TOKENS):
    """A window of several documents (BOS-led), one longer than the max piece length, so pieces get cut."""
    rng = np.random.default_rng(seed)
    window = rng.integers(2, h.vocab_size, n_tokens + 1)
    window[[0, 9, 40, 41, 70]] = h.bos_id  # documents of 9, 31, 1, 29 and 26 tokens
    return tg.pack_window(window, h.bos_id, max_len=24)


class ToyStepBatches:
    """A loader of given batches, batch(step, micro_step): one process running every micro-batch of a step."""
    accum = tg.MICRO_BATCHES

    def __init__(self, batches_per_step):
        self.batches = batches_per_step

    def batch(self, step, micro_step):
        return self.batches[step][micro_step]


def require_reference(script: Path = RECORD_1886) -> None:
    """For tests: skip without the record's script, but fail under CI (CI=true), which must run the oracle."""
    import pytest

    reason = reference_missing_reason(script)
    if reason is not None and os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the oracle, not skip it")
    if reason is not None:
        pytest.skip(reason)


def reference_missing_reason(script: Path = RECORD_1886) -> str | None:
    """None when the record script and the FA3 shim are there, else what is missing."""
    for path in (Path(script), shim_dir(script) / SHIM):
        if not path.is_file():
            return f"the record oracle needs {path} (the shared reference folder)"
    return None


@contextlib.contextmanager
def record_env(env: dict, script: Path = RECORD_1886):
    """Set env (and the script's folder and the FA3 shim on sys.path) for the duration; restore afterwards."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update({k: str(v) for k, v in env.items()})
    paths = list(dict.fromkeys(str(d) for d in (Path(script).resolve().parent, shim_dir(script))))
    sys.path[:0] = paths
    try:
        yield
    finally:
        for p in paths:
            sys.path.remove(p)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def record_env_names(script: Path = RECORD_1886) -> set[str]:
    """The environment variables the record's script reads (from its source)."""
    return set(ENV_READ.findall(Path(script).read_text(encoding="utf-8")))


def env_value(value) -> str:
    return str(int(value)) if isinstance(value, bool) else str(value)


def record_env_for(h: tg.Hyperparameters, script: Path = RECORD_1886, base: dict | None = None, **extra) -> dict:
    """The record's environment for our config h: every field of ours that the script reads under the same
    name; then `base` (RECORD_BASE_ENV unless given) and extra. An empty string of ours means "the default", which the record
    spells its own way, so it is not passed."""
    reads = record_env_names(script)
    env = {f.name.upper(): getattr(h, f.name) for f in dataclasses.fields(h) if f.name.upper() in reads}
    env = {k: env_value(v) for k, v in env.items() if v != ""}
    env.update(RECORD_BASE_ENV if base is None else base)
    env.update({k: env_value(v) for k, v in extra.items()})
    return env


def load_module(path: Path, name: str):
    """The module in the file `path`, run afresh and registered in sys.modules as `name`: torch.compile re-imports
    a traced function's module by name, and dataclasses look their module up there."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)  # as an import that fails: no half-run module left under its name
        raise
    return module


NGRAM_TILT_FILES = ("online_ngram_tilt.py", "online_ngram_state.c")  # #2135's n-gram tilt: module, C source


def load_ngram_tilt(record_folder: Path, folder: str | Path, name: str):
    """#2135's n-gram tilt module, loaded from a copy in `folder`: it builds its C library beside its own file,
    and the shared reference folder is never written."""
    for file in NGRAM_TILT_FILES:
        shutil.copy(Path(record_folder) / file, Path(folder) / file)
    return load_module(Path(folder) / NGRAM_TILT_FILES[0], name)


def import_record(env: dict, script: Path = RECORD_1886, name: str = "record_oracle_module",
                  eager_newton_schulz: bool = True):
    """The record script as a fresh module, its Hyperparameters read from env (and only env's knobs). It is
    registered in sys.modules under `name`: torch.compile re-imports a traced function's module by name."""
    missing = reference_missing_reason(script)
    if missing:
        raise FileNotFoundError(missing)
    with record_env(env, script):
        module = load_module(script, name)
    if eager_newton_schulz:  # it wraps its Newton-Schulz in torch.compile at import: the plain function instead
        ns = module.zeropower_via_newtonschulz5
        module.zeropower_via_newtonschulz5 = getattr(ns, "_torchdynamo_orig_callable", ns)
    return module


def build_record_model(record, env: dict, script: Path = RECORD_1886):
    """The record's GPT with its eager MLP (its fused MLP kernel needs Hopper TMA)."""
    with record_env(env, script):
        model = record.GPT(record.Hyperparameters())
    for block in model.blocks:
        block.mlp.use_fused = False
    return model


# ---- name mapping: ours <-> the record's state_dict ----

# #2135's parameters on the model's root (SmearGate, AsymLogit): our name -> its name. A name the record's
# model does not have (the #1886 script) is skipped by record_view.
ROOT_NAMES_2135 = {"smear_gate": "smear_gate.weight", "smear_lambda": "smear_lambda",
                   "softcap_pos": "softcap_pos", "softcap_neg": "softcap_neg"}


class RecordValData:
    """What the record's evaluators read of their validation data: our val tokens, its byte tables from the
    tokenizer and, for #2135's CaseOps data, the per-token byte sidecar (None: bytes from the tables)."""

    def __init__(self, record, tokens, tokenizer: str, vocab_size: int, device, val_bytes=None):
        import sentencepiece as spm
        self.val_tokens = torch.from_numpy(tokens.astype("int64"))
        luts = record.build_sentencepiece_luts(spm.SentencePieceProcessor(model_file=str(tokenizer)), vocab_size,
                                               device)
        self.base_bytes_lut, self.has_leading_space_lut, self.is_boundary_token_lut = luts
        self.val_bytes = None if val_bytes is None else torch.from_numpy(val_bytes.astype("int64"))
        self.caseops_enabled = val_bytes is not None


def record_name_map(num_layers: int) -> dict[str, tuple[str, int | None]]:
    """Our parameter name -> (the record's name, index into its bank or None), for both records (the sparse
    gate of #2135 keeps #1886's name attn_gate_w)."""
    n = num_layers
    mapping = {"tok_emb.weight": ("tok_emb.weight", None)}
    mapping.update({ours: (theirs, None) for ours, theirs in ROOT_NAMES_2135.items()})
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


@torch.no_grad()
def copy_our_weights(model, record_model) -> None:
    """Load our model's weights into the record's (every record parameter must be covered): the inverse of
    copy_record_weights, through the same name map (its banks stack our per-layer matrices)."""
    n = len(record_model.blocks)
    covered = {theirs for theirs, _ in record_name_map(n).values()}
    missing = sorted({name for name, _ in record_model.named_parameters()} - covered)
    if missing:
        raise KeyError(f"no tensor of ours for the record's parameters {missing}: extend record_name_map")
    ours = model.state_dict()
    for name, target in record_view(dict(record_model.state_dict()), n).items():
        target.copy_(ours[name].to(target.dtype))


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
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.params]  # #2135's softcaps
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


class _StepLoader:
    """The record's loader interface, serving one step's micro-batches in turn."""

    def __init__(self, batches):
        self.batches = iter(batches)

    def next_batch(self, global_tokens, grad_accum_steps):
        return _OneBatchLoader(next(self.batches)).next_batch(global_tokens, grad_accum_steps)


def record_one_gpu_step(record, model, optimizers, h_record, batches, step: int, lr_scale: float) -> float:
    """One step of the record on one GPU: its step_fn with grad_accum_steps = len(batches) (the mean of the
    micro-batch gradients, clipped once) and its real optimizers, Muon in fp32. Returns the mean train loss."""
    h_record.grad_accum_steps = len(batches)
    step_fn = record_closure(record, "train_model", "step_fn", optimizers=optimizers, train_loader=_StepLoader(batches),
                             model=model, base_model=model, h=h_record, device=next(model.parameters()).device)
    with record_muon_in_fp32():
        return step_fn(step, lr_scale).item()


def relative_error(ours: torch.Tensor, record: torch.Tensor) -> float:
    """|ours - record| / |record| in float64 (the oracle tests' measure)."""
    return ((ours.double() - record.double()).norm() / record.double().norm().clamp_min(1e-30)).item()


def toy_models(record, env: dict, h, script: Path = RECORD_1886, seed: int = 0, perturb: float = 0.0, skip=()):
    """The record's model (seeded) and ours holding its weights. perturb > 0 adds noise to every weight whose
    name does not start with one of `skip`, so that every path (zero-initialised projections, gates, lanes,
    skips) carries signal and gradient."""
    torch.manual_seed(seed)
    theirs = build_record_model(record, env, script)
    if perturb:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in theirs.named_parameters():
                if not name.startswith(tuple(skip)):
                    p.add_(torch.randn(p.shape, generator=gen) * perturb)
    ours = tg.GPT(h)
    copy_record_weights(theirs, ours)
    return theirs, ours


def optimizer_steps_against_record(record, env: dict, h, theirs, ours, script: Path = RECORD_1886,
                                   clip_norm: float = 1.0, steps: int = 4) -> dict:
    """`steps` training steps of the record at 8 GPUs (record_train_step) and of ours (train_step) on the same
    toy micro-batches with the step-based schedule and GRAD_CLIP_NORM=clip_norm on both. Returns the worst
    relative weight error after each step ({"worst": [(name, error), ...]}), how many steps clipped some of
    their 8 micro-batch gradients but not all ("mixed_steps"), and the record's LR scale of each step."""
    h = dataclasses.replace(h, grad_clip_norm=clip_norm)
    with record_env(env, script):
        h_record = record.Hyperparameters()
    h_record.grad_clip_norm = clip_norm
    batches = [[toy_packed_batch(100 * s + r, h) for r in range(8)] for s in range(steps)]
    lr_mul = record_closure(record, "train_model", "lr_mul", h=h_record)
    record_opt, our_opt = record.Optimizers(h_record, theirs), tg.Optimizers(ours, h, tg.DistContext())
    loader = ToyStepBatches(batches)
    out = dict(worst=[], mixed_steps=0, scales=[])
    for step in range(steps):
        scale = lr_mul(step / h.iterations)
        if scale != tg.lr_multiplier(step / h.iterations, h):
            raise AssertionError(f"step {step}: the record's LR scale {scale} differs from ours")
        with record_env(env, script):
            _, norms = record_train_step(record, theirs, record_opt, h_record, batches[step], step, scale, fp32=True)
        out["mixed_steps"] += 0 < sum(abs(n - clip_norm) < 1e-5 for n in norms) < len(norms)
        tg.train_step(ours, ours, loader, our_opt, step, scale)
        weights = record_view(dict(theirs.state_dict()), h.num_layers)
        errors = {name: relative_error(p.detach(), weights[name]) for name, p in ours.named_parameters()}
        out["worst"].append(max(errors.items(), key=lambda item: item[1]))
        out["scales"].append(scale)
    return out
