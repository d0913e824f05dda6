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
