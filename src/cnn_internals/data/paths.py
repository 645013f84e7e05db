"""Where a dataset's stages put their outputs (re-exported by pipeline/artifacts.py, which lists
every artifact). Here, beside the data code, so that download@, prepare@ and stats@ import no
model code: through artifacts.py they would depend on every net, and an edit of one would
prepare ImageNet (hours, 252 GB) again."""

from pathlib import Path


def raw_dir(dataset: str) -> Path:
    """download@<dataset>'s output: the raw files as published."""
    return Path("data/raw") / dataset


def prepared_dir(dataset: str) -> Path:
    """prepare@<dataset>'s output: the uint8 arrays, labels and class list."""
    return Path("data/prepared") / dataset


def stats_dir(dataset: str) -> Path:
    """stats@<dataset>'s output: the dataset statistics."""
    return Path("data/stats") / dataset


def stats_metrics_path(dataset: str) -> Path:
    """stats@<dataset>'s summary, a DVC metric."""
    return Path("metrics") / f"{dataset}_stats.json"
