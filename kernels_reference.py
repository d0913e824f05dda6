"""The plain-PyTorch maths of kernels.py's kernels, with the same signatures: what tests/test_kernels.py,
tests/test_gpu.py and scripts/bench_kernels.py compare the kernels against. Not shipped: a run never calls it,
so it costs no artifact bytes. Written independently of kernels.py (its reduction too)."""

import torch
import torch.nn.functional as F


def softcap_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, softcap: float,
                          reduction: str = "mean") -> torch.Tensor:
    """fp32 softcap, log_softmax, the target's log-probability; targets < 0 are ignored (loss 0, not counted)."""
    z = logits.float()
    if softcap > 0:
        z = softcap * torch.tanh(z / softcap)
    log_p = torch.log_softmax(z.reshape(-1, z.size(-1)), dim=-1)
    flat = targets.reshape(-1)
    picked = log_p.gather(1, flat.clamp_min(0)[:, None])[:, 0]
    losses = torch.where(flat >= 0, -picked, torch.zeros_like(picked))
    reductions = {"none": lambda: losses.view(targets.shape), "sum": losses.sum,
                  "mean": lambda: losses.sum() / (flat >= 0).sum().clamp_min(1)}
    return reductions[reduction]()


def fused_mlp(x: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor, slope: float = 0.5) -> torch.Tensor:
    """LeakyReLU(slope)^2 MLP: (x w_up^T) -> leaky ReLU -> square -> w_down."""
    return F.linear(F.leaky_relu(F.linear(x, w_up), slope).square(), w_down)


def qk_norm_rope(q: torch.Tensor, k: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                 gain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head RMSNorm (eps: fp32's machine epsilon, F.rms_norm's default for fp32 and 16-bit inputs, at any
    dtype), then the first 2P dims rotated pairwise (d, d + P) by the position's angle (x_d cos + x_{d+P} sin,
    x_{d+P} cos - x_d sin), then the query's per-head gain; in the inputs' dtype."""
    cos, sin = rope

    def norm_rotate(x):
        n = F.rms_norm(x, (x.size(-1),), eps=torch.finfo(torch.float32).eps)
        p = cos.size(-1)
        c, s = cos.to(x.dtype), sin.to(x.dtype)
        a, b = n[..., :p], n[..., p:2 * p]
        return torch.cat((a * c + b * s, b * c - a * s, n[..., 2 * p:]), dim=-1)
    return norm_rotate(q) * gain[:, None], norm_rotate(k)
