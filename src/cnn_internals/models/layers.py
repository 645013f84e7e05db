"""Layers shared by the nets that the projection engine knows how to run backwards."""

import torch
from torch import nn

# LeCun et al. 1998, appendix A: A = 1.7159 and S = 2/3 make f(1) = 1 and f(-1) = -1.
A, S = 1.7159, 2.0 / 3.0


class ScaledTanh(nn.Module):
    """f(a) = A tanh(S a): the paper's squashing function (its appendix A)."""

    def __init__(self, a=A, s=S):
        super().__init__()
        self.a, self.s = a, s

    def forward(self, x):
        return self.a * torch.tanh(self.s * x)

    def extra_repr(self):
        return f"a={self.a:.4f}, s={self.s:.4f}"
