"""Activations that are not torch's own and that the projection engine knows how to run
backwards: LeNet-5's scaled tanh. It lives in the engine so that the engine knows no net
(projection.py carries the ReLU rules over to it), and the nets build it from here.
"""

import torch
from torch import nn
from torch.autograd.function import FunctionCtx

# LeCun et al. 1998, appendix A: A = 1.7159 and S = 2/3 make f(1) = 1 and f(-1) = -1.
A, S = 1.7159, 2.0 / 3.0


class ScaledTanhFunction(torch.autograd.Function):
    """A tanh(S x) computed as 2A sigmoid(2S x) - A (tanh u = 2 sigmoid(2u) - 1: the same
    function), one autograd node that keeps only sigmoid(2S x) for its backward pass,
    dy/dx = 4AS sigmoid (1 - sigmoid).

    Why: on this project's CPUs torch.tanh runs slower than torch.sigmoid, and autograd of the
    reference form takes three nodes; fused, LeNet-5's C1 activation's forward and backward
    run faster (docs/benchmarks.md, 'LeNet-5's scaled tanh fused for training'; the whole
    training loop: benchmarks/training.py, ``ours_reference_activation``). Its float32 values
    are within 5e-7 of the float64 function (torch.tanh's: 2e-7), its gradient torch's
    gradcheck passes in float64 (tests/test_lenet5_paper.py)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, a: float, s: float) -> torch.Tensor:
        sig = torch.sigmoid_(x * (2.0 * s))
        ctx.save_for_backward(sig)
        ctx.slope = 4.0 * a * s
        # -A + 2A sigmoid in one pass (a 0-dim CPU tensor broadcasts, and takes sig's dtype)
        return torch.add(torch.tensor(-a, dtype=sig.dtype), sig, alpha=2.0 * a)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (sig,) = ctx.saved_tensors
        return torch.ops.aten.sigmoid_backward(grad, sig).mul_(ctx.slope), None, None


class ScaledTanh(nn.Module):
    """f(a) = A tanh(S a): the paper's squashing function (its appendix A).

    ``fused``: in training mode, compute it with ``ScaledTanhFunction`` (the training loop
    turns it on where it is faster: ``training.Precision``); evaluation, mining, projection
    and explain always run the reference form below."""

    fused = False

    def __init__(self, a: float = A, s: float = S) -> None:
        super().__init__()
        self.a, self.s = a, s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused and self.training:
            return ScaledTanhFunction.apply(x, self.a, self.s)
        return self.a * torch.tanh(self.s * x)

    def extra_repr(self) -> str:
        return f"a={self.a:.4f}, s={self.s:.4f}"

