"""`dvc plots show` / `dvc plots diff` as PNG files, offline.

    python -m cnn_internals.plots_png                  # workspace vs HEAD, into plots/
    python -m cnn_internals.plots_png HEAD~1 HEAD      # two commits, each curve in both
    python -m cnn_internals.plots_png --out docs/plots workspace

DVC's HTML pages load Vega from a CDN, so they stay blank without a network. This asks DVC for
the same charts as Vega-Lite specs with their data inlined (`dvc plots diff --json`) and
renders each with vl-convert (a self-contained Vega-Lite renderer, no browser): one PNG per
plot, named after the plot (`metrics-lenet5_history.tsv.png`, `LeNet-5-loss.png`).
"""

import json
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from cnn_internals.core.atomic import write_bytes
from cnn_internals.core.errors import UserError
from cnn_internals.core.project import user_path
from cnn_internals.pipeline.cli import ArgumentParser, cli


def plot_specs(revisions: Sequence[str], targets: Iterable[str] = ()) -> dict:
    """{plot id: Vega-Lite spec} from `dvc plots diff --json` for ``revisions`` (none: the
    workspace against HEAD, as DVC does)."""
    cmd = ["dvc", "plots", "diff", "--json", *revisions]
    for target in targets:
        cmd += ["--targets", target]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError("dvc not found: install the package (pip install -e .) in this environment") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise UserError(f"`{' '.join(cmd)}` failed: {lines[-1] if lines else 'exit ' + str(result.returncode)}")
    data = json.loads(result.stdout).get("data", {})
    return {plot: entry["content"] for plot, entries in data.items() for entry in entries
            if entry.get("type") == "vega"}


def file_name(plot_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", plot_id).strip("-") + ".png"


def render_png(spec: dict, scale: float = 2.0) -> bytes:
    try:
        import vl_convert
    except ImportError:
        raise UserError("vl-convert-python is not installed: pip install -e \".[plots]\"") from None
    return vl_convert.vegalite_to_png(vl_spec=spec, scale=scale)


@cli
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m cnn_internals.plots_png",
                            description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("revisions", nargs="*", help="git revisions (or `workspace`), as for `dvc plots diff`")
    parser.add_argument("--out", type=user_path, default=Path("plots"),
                        help="folder for the PNGs (default: plots/ at the project root)")
    parser.add_argument("--targets", nargs="*", default=(), help="only these plots or files")
    args = parser.parse_args(argv)
    specs = plot_specs(args.revisions, args.targets)
    if not specs:
        raise UserError("dvc plots diff gave no charts: run `dvc repro` first, or name revisions that have plots")
    pngs = {args.out / file_name(plot): render_png(spec) for plot, spec in specs.items()}
    for path, png in pngs.items():
        write_bytes(path, png)
    print(f"wrote {len(pngs)} charts: " + ", ".join(str(p) for p in pngs))


if __name__ == "__main__":
    sys.exit(main())
