"""Feature visualization by optimization: for each unit, an input that maximizes it (Olah et al.
2017, "Feature Visualization", Distill; Lucid and its PyTorch port Lucent), batched.

The objective of a map is its mean activation over its positions (Lucid's ``channel``), of a
unit without positions (a fully connected layer's) its value, of a class its score as the
model's forward returns it (``layer`` None): the same values mining ranks, the model in eval
mode. One batch holds many units, one image each, and one optimizer step serves them all; the
loss is the sum of the images' objectives, so each image's gradient is its own, and Adam's
update is elementwise: an image does not depend on which others share its batch. Its
randomness (initial noise, the transforms of every step) comes from its own generator, seeded
by the caller (the stage: from (seed, layer, map)).

The recipe, as Distill's article and Lucid/Lucent have it (every number a field of ``Recipe``):
- the image is parameterized in Fourier space: a real 2-d spectrum per colour channel, scaled
  by 1/frequency (``decay_power`` 1), initialised N(0, 0.01^2), divided by 4 after the inverse
  transform (Lucid's ``fft_image``);
- colour decorrelated: the C channels of that image are mixed by a C x C matrix (``colour``,
  given by the caller: Lucid's fixed ImageNet matrix, or one from a dataset's RGB PCA), then a
  sigmoid gives [0, 1] pixels, which ``to_input`` turns into the model's input;
- transformation robustness every step: pad 12 (grey, 0.5), jitter 8, scale 0.9-1.1, rotate
  -10..10 degrees, jitter 4, in pixels of a 128-px image (``reference``), scaled here to the
  image's size, each drawn from Lucid's lists. Lucid applies them one after another and lets
  the image grow and shrink; Lucent, for a net of fixed input size, resizes the result to that
  size, which undoes the scale. Here the chain is one affine map per image that samples the
  image (bilinear, grey outside) at the input size: the frame is what the chain leaves at scale
  1 (the padded image less both jitters, so the image has Lucid's grey margins), moved by the
  jitters and rotated, and zoomed by the drawn scale, which so keeps its effect;
- Adam, lr 0.05, 512 steps;
- the redirected ReLU gradient (Lucid's ``render_vis`` default, ``relu_gradient_override``):
  where a ReLU passes no gradient at all for an image (every unit it feeds is off), the
  gradient goes through where it would raise a negative input, so an image that starts where a
  unit is dead everywhere (a grey start and an unbiased net) can still climb. It changes
  nothing where any gradient gets through, and nothing for nets without ReLU modules (LeNet-5).
``Recipe(param="pixel", l2=...)`` is the plain alternative: the pixels themselves, rescaled to
a fixed L2 norm, no sigmoid; with the transforms off it is the textbook problem whose optimum
for a linear unit is its filter's direction (the tests hold the plumbing to that).
"""

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnn_internals.engine.hooks import eval_mode, forward_to, replaced_forwards

MAGIC = 4.0            # Lucid's fft_image divides the inverse transform by this


@dataclass(frozen=True)
class Recipe:
    steps: int = 512
    lr: float = 0.05
    param: str = "fourier"            # fourier | pixel
    decay_power: float = 1.0          # the spectrum's 1/frequency^decay_power scaling
    init_std: float = 0.01
    l2: float | None = None           # pixel param: the image's fixed L2 norm (None: unconstrained)
    pad: float = 12.0                 # transforms, in pixels of a ``reference``-px image
    jitter: float = 8.0
    scale: tuple[float, float] = (0.9, 1.1)
    rotate: float = 10.0              # degrees, either way
    jitter2: float = 4.0
    reference: int = 128
    redirected_relu: bool = True      # Lucid's relu_gradient_override

    def __post_init__(self):
        if self.param not in ("fourier", "pixel"):
            raise ValueError(f"param must be fourier or pixel, got {self.param!r}")
        if self.steps < 0 or self.lr <= 0:
            raise ValueError("steps must be >= 0 and lr > 0")

    @property
    def transforms(self) -> bool:
        return bool(self.pad or self.jitter or self.jitter2 or self.rotate or self.scale != (1.0, 1.0))


def spectrum_scale(height: int, width: int, decay_power: float = 1.0) -> torch.Tensor:
    """(height, width // 2 + 1): 1 / max(frequency, 1 / max side) ** decay_power, the weight of
    each coefficient of a real 2-d spectrum. With the orthonormal inverse transform this is
    Lucid's ``fft_image`` (its extra sqrt(h w) cancels its unnormalized inverse's 1 / (h w)
    down to the same 1 / sqrt(h w)) and Lucent's."""
    fy = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(width, dtype=torch.float64)[None, :]
    freqs = (fy * fy + fx * fx).sqrt()
    return 1.0 / freqs.clamp_min(1.0 / max(height, width)) ** decay_power


def colour_matrix(eigvecs: torch.Tensor, eigvals: torch.Tensor) -> torch.Tensor:
    """The colour decorrelation from a dataset's RGB PCA: eigenvector i (column i) times the
    square root of its eigenvalue, divided by the largest column norm (as Lucid normalizes its
    fixed ImageNet matrix). Applied as pixels = matrix @ decorrelated, per position."""
    matrix = torch.as_tensor(eigvecs, dtype=torch.float64) * torch.as_tensor(eigvals, dtype=torch.float64).clamp_min(0).sqrt()
    return matrix / matrix.norm(dim=0).max().clamp_min(1e-30)


class Images(nn.Module):
    """A batch of parameterized images: ``forward()`` gives (B, C, H, W) pixels, in [0, 1] for
    the Fourier parameterization. Each image's initial values come from its own generator."""

    def __init__(self, channels: int, height: int, width: int, generators: Sequence[torch.Generator],
                 recipe: Recipe, colour: torch.Tensor | None = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu"):
        super().__init__()
        self.recipe, self.size = recipe, (height, width)
        if recipe.param == "fourier":
            shape = (channels, height, width // 2 + 1, 2)
            scale = spectrum_scale(height, width, recipe.decay_power).to(dtype)
            self.register_buffer("scale", scale[None, None].to(device))
        else:
            shape = (channels, height, width)
        init = torch.stack([torch.randn(shape, generator=g, dtype=torch.float64) for g in generators]) * recipe.init_std
        self.values = nn.Parameter(init.to(dtype=dtype, device=device))
        if colour is not None and recipe.param == "fourier" and channels > 1:
            self.register_buffer("colour", torch.as_tensor(colour, dtype=dtype, device=device))
        else:
            self.colour = None

    def forward(self) -> torch.Tensor:
        if self.recipe.param == "pixel":
            x = self.values
            if self.recipe.l2 is not None:
                x = x * (self.recipe.l2 / x.flatten(1).norm(dim=1).clamp_min(1e-30)).view(-1, 1, 1, 1)
            return x
        spectrum = torch.view_as_complex(self.values.contiguous()) * self.scale
        x = torch.fft.irfft2(spectrum, s=self.size, norm="ortho") / MAGIC
        if self.colour is not None:
            x = torch.einsum("ij,bjhw->bihw", self.colour, x)
        return torch.sigmoid(x)


def draw_transforms(generators: Sequence[torch.Generator], size: tuple[int, int], recipe: Recipe,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, 2, 3) affine maps for F.affine_grid, one per image from its own generator: the
    output (the model's input size) samples the image padded by ``pad`` (grey outside), after
    a jitter, a scale, a rotation and a second jitter, each drawn as Lucid draws it, in pixels
    of a ``reference``-px image scaled to ``size``."""
    height, width = size
    k = max(height, width) / recipe.reference
    # the jitters as whole pixels at this size (Lucid crops whole pixels): 8 and 4 of 128 px are
    # 2 and 1 at LeNet-5's 32, 14 and 7 at 224
    pad, j1, j2 = recipe.pad * k, round(recipe.jitter * k), round(recipe.jitter2 * k)
    thetas = []
    for g in generators:
        u = torch.rand(6, generator=g, dtype=torch.float64)
        # Lucid's lists: scales 1 + (i - 5) / 50 for i in 0..10, angles -10..10 and five more 0s
        steps = max(1, round((recipe.scale[1] - recipe.scale[0]) * 50))
        s = recipe.scale[0] + (recipe.scale[1] - recipe.scale[0]) * math.floor(u[0] * (steps + 1)) / steps
        n_angles = 2 * int(recipe.rotate) + 1
        pick = math.floor(u[1] * (n_angles + 5))
        angle = math.radians(-recipe.rotate + pick) if pick < n_angles and recipe.rotate else 0.0
        # jitter offsets uniform over the integers 0..j, both ends in: Lucid's tf.random_crop of a
        # side less j draws its offset from j + 1 places, so its shifts -j/2..j/2 average zero
        # (Lucent's np.random.choice(d) draws 0..d-1: half a pixel off centre on average, and a
        # jitter of 1 px at 32 px would be a constant shift, not a jitter)
        o1 = [math.floor(v * (j1 + 1)) for v in (u[2], u[3])]
        o2 = [math.floor(v * (j2 + 1)) for v in (u[4], u[5])]
        # the frame: what Lucid's chain leaves at scale 1 (the image, padded, less both
        # jitters), zoomed by s about its centre, which the jitters moved
        extent = (height + 2 * pad - j1 - j2) / s, (width + 2 * pad - j1 - j2) / s
        shift = [(o1[i] - j1 / 2) + (o2[i] - j2 / 2) / s for i in (0, 1)]
        extent_y, extent_x = extent[0] / height, extent[1] / width
        shift_y, shift_x = shift
        cos, sin = math.cos(angle), math.sin(angle)
        thetas.append([[cos * extent_x, -sin * extent_y, 2 * shift_x / width],
                       [sin * extent_x, cos * extent_y, 2 * shift_y / height]])
    return torch.tensor(thetas, dtype=dtype)


def transform(pixels: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``pixels`` (B, C, H, W) sampled through ``theta`` at the same size, bilinear, 0.5 (grey)
    where the map leaves the image."""
    grid = F.affine_grid(theta.to(pixels.device, pixels.dtype), list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5


def objective(acts: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """(B,): row b's unit units[b] of ``acts``: a map's mean over its positions (B, C, H, W),
    a unit's value (B, C)."""
    rows = torch.arange(acts.shape[0], device=acts.device)
    picked = acts[rows, units.to(acts.device)]
    return picked.flatten(1).mean(1) if picked.dim() > 1 else picked


def unit_objective(model: nn.Module, layer: str | None, x: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """(B,) objective of units[b] of module ``layer`` (None: the model's scores) for x[b]."""
    return objective(forward_to(model, layer, x)[0], units)


class _RedirectedReLU(torch.autograd.Function):
    """ReLU forward; backward (Lucid's ``redirected_relu_grad``): the ReLU's gradient for each
    image where any of it is nonzero, else the incoming gradient with the parts that would push
    an already negative input lower (positive: the loss is minimized) zeroed."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        # Lucid's relu_grad, 0 where x < 0 (x == 0 passes): grad less grad where -x > 0, both
        # exact, through threshold_backward, ReLU's own fused kernel; a boolean mask and
        # masked_fill took about 4x as long on 2 CPU cores (9 ms against 2-3 ms a backward of
        # AlexNet's conv1 output at batch 8, timed by hand)
        relu_grad = grad - torch.ops.aten.threshold_backward(grad, x.neg(), 0)
        passes = relu_grad.flatten(1).abs().amax(1) > 0
        if not grad.is_cuda and bool(passes.all()):   # the usual case on the CPU: nothing to redirect
            return relu_grad                            # (on a GPU the check would sync at every ReLU)
        redirected = grad.masked_fill((x < 0) & (grad > 0), 0)
        return torch.where(passes.view(-1, *([1] * (grad.dim() - 1))), relu_grad, redirected)


@torch.no_grad()
def objectives_in_chunks(model: nn.Module, layer: str | None, units: torch.Tensor,
                         make_input: Callable[[torch.Tensor], torch.Tensor], chunk: int) -> torch.Tensor:
    """(N,) on the CPU: row i's objective of units[i] on input ``make_input(rows)`` (model inputs for
    those rows, on the model's device), ``chunk`` rows a pass so that memory stays bounded."""
    device = next(model.parameters()).device
    units = torch.as_tensor(units, dtype=torch.long)
    values = []
    with eval_mode(model):
        for start in range(0, len(units), chunk):
            rows = torch.arange(start, min(start + chunk, len(units)))
            values.append(unit_objective(model, layer, make_input(rows), units[rows].to(device)).cpu())
    return torch.cat(values) if values else torch.zeros(0)


def redirected_relus(model: nn.Module) -> contextlib.AbstractContextManager:
    """Inside the block every ``nn.ReLU`` module of ``model`` has the redirected gradient."""
    return replaced_forwards(model, lambda m: _RedirectedReLU.apply if isinstance(m, nn.ReLU) else None)


def visualize(model: nn.Module, layer: str | None, units: Iterable[int], input_size: tuple[int, int, int],
              to_input: Callable[[torch.Tensor], torch.Tensor], generators: Sequence[torch.Generator],
              recipe: Recipe = Recipe(), colour: torch.Tensor | None = None, dtype: torch.dtype = torch.float32,
              progress: Callable[[int], None] | None = None,
              autocast: torch.dtype | None = None, score: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(pixels (B, C, H, W) on the CPU, objectives (B,)): for each units[b] of module ``layer``
    (None: the model's scores, units are classes) the image the recipe makes of it, and its
    objective on that image untransformed (``to_input`` of the pixels, model in eval mode).
    ``generators[b]`` draws image b's initial values and every step's transforms; ``to_input``
    maps pixels (B, C, H, W) to model inputs, differentiably (the net's normalization).
    ``progress(n)`` is called after each step with 1. ``autocast`` (e.g. bfloat16): the net's
    forward and backward of every step in that precision (torch.autocast on the model's device;
    the image, its gradient and Adam stay in ``dtype``); the returned objectives are computed
    without it. The stage asks for it on CUDA only (visualize.<net>.amp); on the CPU it serves
    to measure what bfloat16's rounding does to the objective (tests, benchmarks/feature_vis.py).
    ``score`` False skips the last forward pass and returns None for the objectives."""
    units = torch.as_tensor(list(units), dtype=torch.long)
    if len(units) != len(generators):
        raise ValueError("one generator per unit")
    param = next(model.parameters())
    device = param.device
    channels, height, width = input_size
    images = Images(channels, height, width, generators, recipe, colour, dtype, device)
    optimizer = torch.optim.Adam(images.parameters(), lr=recipe.lr)
    redirect = redirected_relus(model) if recipe.redirected_relu else contextlib.nullcontext()
    with eval_mode(model), torch.enable_grad():
        with redirect:
            _optimize(model, layer, units, images, optimizer, to_input, generators, recipe, progress, autocast)
        with torch.no_grad():
            pixels = images()
            final = unit_objective(model, layer, to_input(pixels.to(param.dtype)), units).cpu() if score else None
    return pixels.detach().cpu(), final


def _optimize(model, layer, units, images, optimizer, to_input, generators, recipe, progress, autocast=None):
    """``recipe.steps`` Adam steps of ``images`` on the units' summed objective."""
    dtype = images.values.dtype
    height, width = images.size
    param = next(model.parameters())
    for _ in range(recipe.steps):
        optimizer.zero_grad(set_to_none=True)
        pixels = images()
        if recipe.transforms:
            pixels = transform(pixels, draw_transforms(generators, (height, width), recipe, dtype))
        with (torch.autocast(param.device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext()):
            loss = -unit_objective(model, layer, to_input(pixels.to(param.dtype)), units).float().sum()
        loss.backward(inputs=[images.values])     # the image's gradient only: no weight gradients
        optimizer.step()
        if progress is not None:
            progress(1)
