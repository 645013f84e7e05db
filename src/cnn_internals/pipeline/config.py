"""The schemas of the params sections no lower layer owns, and ``train.<net>`` put together.

``train.<net>`` is a net's own config class (its model file) plus the training recipe
(training/recipe.py): one pydantic class per net, made here once. ``pipeline`` says what
`dvc repro` builds; ``mine.<net>`` how many images per map and from which split;
``visualize.<net>`` the feature-visualization recipe. The others:
``data.<dataset>`` (data/mnist.py, data/imagenette.py), ``weights.<net>`` (data/pretrained.py),
``render.<net>`` (viz/render.py), ``report.<net>`` (viz/report.py). The validate stage reads
them all.
"""

import difflib
import functools
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from cnn_internals.core.config import AllOrCount, Count, Natural, NonNegative, Positive, Section, check_keys, read_key, read_section
from cnn_internals.data.datasets import dataset_names
from cnn_internals.models import NETS, Net, NetConfig
from cnn_internals.training.recipe import Recipe


class _TrainRules(Section):
    """The rules of ``train.<net>`` across the net's keys and the recipe's."""

    @model_validator(mode="after")
    def _epochs_0_from_scratch_only_on_purpose(self):
        # epochs 0 evaluates the starting weights: torchvision's ImageNet ones are worth a
        # report; a net from scratch is noise, and would replace the trained model, pictures and
        # report without a word. Tests of random-weight nets say untrained: true.
        if self.epochs == 0 and self.weights == "scratch" and not self.untrained:
            raise ValueError("{key}.epochs is 0 with weights: scratch: the model, pictures and report would be an "
                             "untrained net's. Set epochs > 0, or {key}.untrained: true if an untrained net is what "
                             "you want")
        return self


@functools.cache
def _train_schema(name: str) -> type:
    net = NETS[name]
    return type(f"{net.config.__name__.removesuffix('Config')}Train", (net.config, Recipe, _TrainRules),
                {"__doc__": f"``train.{name}``: {net.title}'s own keys and the training recipe.",
                 "__module__": __name__})


def train_schema(net: Net) -> type:
    """The schema of ``train.<net>``: the net's config class and ``Recipe`` in one."""
    return _train_schema(net.name)


def read_train(params: Mapping, net: Net) -> NetConfig:
    """``train.<net>``, checked: a ``train_schema(net)`` instance (the net's config and a Recipe)."""
    return read_section(params, f"train.{net.name}", train_schema(net))


def train_key(params: Mapping, net: Net, key: str) -> Any:
    """One key of ``train.<net>`` (``device``, ``weights``), checked as its schema declares it,
    for a stage that declares only that key."""
    return read_key(params, f"train.{net.name}", train_schema(net), key)


class PipelineConfig(Section):
    """``pipeline``: what `dvc repro` builds (dvc.yaml's foreach): ``nets``, each net mapped to
    the dataset it is trained, mined and shown on (``${key}`` and ``${item}`` in dvc.yaml), and
    ``datasets``, every dataset those use (and any other to prepare)."""

    nets: dict[str, str]
    datasets: list[str]

    @field_validator("nets")
    @classmethod
    def _known_nets(cls, nets: dict) -> dict:
        unknown = [name for name in nets if name not in NETS]
        if not nets or unknown:
            raise ValueError(f"must map nets out of {', '.join(NETS)} to their datasets (lenet5: mnist); got "
                             f"{unknown[0] if unknown else nets}")
        return nets

    @field_validator("datasets")
    @classmethod
    def _known_and_distinct(cls, items: list, info: ValidationInfo) -> list:
        known = (info.context or {}).get("datasets")
        if not items or len(set(items)) != len(items) or (known is not None and any(i not in known for i in items)):
            raise ValueError(f"must list distinct names out of {', '.join(known or [])} (the datasets under data); "
                             f"got {items!r}")
        return items

    @model_validator(mode="after")
    def _datasets_of_the_nets(self, info: ValidationInfo):
        known = (info.context or {}).get("datasets")
        for name, dataset in self.nets.items():
            if known is not None and dataset not in known:
                close = difflib.get_close_matches(dataset, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f" (it has: {', '.join(known)})"
                raise ValueError(f"{{key}}.nets.{name} is {dataset!r}, but there is no such dataset under data{hint}")
            if dataset not in self.datasets:
                raise ValueError(f"{name} is trained on {dataset}, so {dataset} must be listed in {{key}}.datasets")
        return self


def read_pipeline(params: Mapping) -> PipelineConfig:
    return read_section(params, "pipeline", PipelineConfig, context={"datasets": dataset_names(params)})


class MineConfig(Section):
    """``mine.<net>``: the top ``k`` images of every map, from ``split`` of the net's dataset,
    on ``nproc`` processes (torchrun, as training: each mines a contiguous run of the batches)."""

    k: Count
    split: str
    nproc: Count = 1                   # processes (torchrun); the same bytes as 1 at the same threads per process

    @field_validator("split")
    @classmethod
    def _a_split_of_the_dataset(cls, split: str, info: ValidationInfo) -> str:
        # the dataset's splits, where the reader knows them (validate reads data.<dataset>.kind;
        # the mine stage, which declares only mine.<net>, finds a wrong split by its missing file)
        splits = (info.context or {}).get("splits")
        if splits is not None and split not in splits:
            raise ValueError(f"must be one of {', '.join(splits)}; got {split!r}")
        return split


def read_mine(params: Mapping, net: Net, splits: tuple | None = None) -> MineConfig:
    """``mine.<net>``; ``split`` checked against ``splits`` (the net's dataset's) where given."""
    return read_section(params, f"mine.{net.name}", MineConfig, context={"splits": splits})


class VisualizeConfig(Section):
    """``visualize.<net>``: feature visualization by optimization (engine/feature_vis.py), the
    recipe of Distill's article and Lucid/Lucent as defaults. ``maps``: all, or the first N maps
    (units, classes) of each shown layer; ``batch``: images optimized together (memory and speed:
    an image does not depend on its batch-mates, in float32 up to the last bits a kernel's
    summation order may take from the batch's size); the transforms in pixels of a 128-px image."""

    maps: AllOrCount = "all"
    seed: Natural = 0
    batch: Count = 256
    decorrelate: bool = True           # colour decorrelated by the dataset's RGB PCA (grey nets: nothing to do)
    amp: bool = False                  # CUDA only: the net in bfloat16 autocast (benchmarks/feature_vis.py --amp checks 1 %)
    # The recipe's keys, with Lucid's values: the engine's Recipe has the same defaults (a test holds
    # them equal; not imported from there, so that the stages that only read params do not depend on
    # the engine's feature visualization)
    steps: Count = 512
    lr: Positive = 0.05
    decay_power: NonNegative = 1.0     # the Fourier spectrum scaled by 1 / frequency ** decay_power
    init_std: Positive = 0.01
    pad: NonNegative = 12.0
    jitter: NonNegative = 8.0
    scale: Annotated[list[Positive], Field(min_length=2, max_length=2)] = [0.9, 1.1]     # [low, high]
    rotate: Annotated[int, Field(ge=0, le=180)] = 10      # degrees either way, whole degrees as Lucid's list
    jitter2: NonNegative = 4.0
    redirected_relu: bool = True       # Lucid's relu_gradient_override: a dead ReLU still passes a rising gradient

    @field_validator("scale")
    @classmethod
    def _low_to_high(cls, scale: list) -> list:
        if scale[0] > scale[1]:
            raise ValueError(f"must be [low, high] with low <= high, got {list(scale)}")
        return scale


def read_visualize(params: Mapping, net: Net) -> VisualizeConfig:
    return read_section(params, f"visualize.{net.name}", VisualizeConfig)


# The params file's sections, and what each holds: a dataset's or a net's block.
SECTIONS = {"pipeline": None, "data": None, "weights": NETS, "train": NETS, "mine": NETS, "render": NETS,
            "report": NETS, "visualize": NETS}


def check_layout(params: Mapping) -> None:
    """No unknown section, and no block for an unknown dataset or net (``trian:``, ``train.lenet``):
    a typo there would otherwise be ignored, or read as a missing block."""
    check_keys(params, "", SECTIONS)
    for section, known in SECTIONS.items():
        if known is not None:
            check_keys(params, section, known)
