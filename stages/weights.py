"""Stage `weights@<net>`: torchvision's ImageNet weights of a net, verified, into models/pretrained/<net>.pth.

    python stages/weights.py --net vgg16               # what `dvc repro weights@vgg16` runs

`dvc repro` runs it for each net in ``pipeline.nets``. A net whose ``train.<net>.weights`` is
scratch (the default for the papers' own nets) starts from its own initialisation: the stage then
writes a models/pretrained/<net>.pth of one line saying so and needs no network; train@<net> depends on that
file either way, which is how DVC knows to fetch before it trains. For imagenet the file is
``weights.<net>.url`` in params.yaml; ``$CNN_INTERNALS_MIRROR`` (a base URL or a folder holding
the file under its own name, e.g. vgg16-397923af.pth) is tried first, transient failures are
retried (a dropped transfer resumes where it stopped), and ``weights.<net>.sha256`` decides.
The output appears only once its sha256 matches and it loads as a state dict; on failure
nothing is written and one line on stderr says what went wrong and how to fix it (exit 2).
Whatever loads the file later checks its sha256 again (cnn_internals.pretrained).
"""

import _bootstrap  # noqa: F401 -- first: this checkout's src/ on sys.path

import os
import sys

from cnn_internals.core.atomic import write_bytes
from cnn_internals.core.config import node
from cnn_internals.core.params import load_params
from cnn_internals.core.project import shown, user_path
from cnn_internals.data.pretrained import SCRATCH, fetch_pretrained, load_pretrained, pretrained_path, wants_imagenet, weights_entry
from cnn_internals.pipeline.cli import cli, stage_parser


def parse_args(argv=None):
    parser = stage_parser(__doc__)
    parser.add_argument("--net", required=True, help="whose weights: a key of `weights` in the params")
    parser.add_argument("--out", type=user_path, default=None,
                        help="output file, replaced once verified (default: models/pretrained/NET.pth)")
    return parser.parse_args(argv)


@cli
def main(argv=None):
    args = parse_args(argv)
    params = load_params(args.params)
    dest = args.out if args.out is not None else pretrained_path(args.net)
    if not wants_imagenet(params, args.net):
        node(params, f"weights.{args.net}", None)     # declared by the stage; unused from scratch
        write_bytes(dest, SCRATCH)
        print(f"{shown(os.path.relpath(dest))}: no weights, train.{args.net}.weights is scratch (nothing to fetch)")
        return
    out = fetch_pretrained(params, args.net, dest)
    sha256 = weights_entry(params, args.net)["sha256"]
    state = load_pretrained(out, sha256)       # what every later load does: the hash, then the tensors
    numbers = sum(t.numel() for t in state.values())
    print(f"{shown(os.path.relpath(out))}: sha256 {sha256[:8]}... verified, {len(state)} tensors, "
          f"{numbers:,} numbers")


if __name__ == "__main__":
    sys.exit(main())
