"""Stage `gallery`: every listed net's pictures under one flat name each, images/<net>_<layer>.png
and images/<net>_classes.png.

    python stages/gallery.py

render@<net> writes its pictures into renders/<net>/<layer>.png (DVC-cached): a foreach stage
can only declare outputs whose names it can spell from the net's name, and DVC's templating
cannot look a net's layer names up from it (no nested interpolation, treeverse/dvc#5167). This
stage, which owns images/ (git-tracked, `cache: false`), copies them for the nets that
`pipeline.nets` lists, in the order they were rendered: images/lenet5_conv1.png,
images/vgg16_conv5_3.png. The copy is byte for byte and takes a fraction of a second, so a
render setting of one net still reruns only that net's render stage and this copy.
"""

import _bootstrap  # noqa: F401 -- first: this checkout's src/ on sys.path

import sys

from cnn_internals.core.atomic import atomic_dir
from cnn_internals.core.config import read_key
from cnn_internals.core.errors import UserError
from cnn_internals.core.params import load_params
from cnn_internals.models import get_net
from cnn_internals.pipeline.artifacts import GALLERY, gallery_name, render_path, rendered
from cnn_internals.pipeline.cli import cli, stage_parser
from cnn_internals.pipeline.config import PipelineConfig

OUT = GALLERY


def gather(nets) -> dict:
    """{file name in images/: bytes} for every shown layer of ``nets``; a missing picture is
    one UserError naming the stage that writes it."""
    pictures = {}
    for net in map(get_net, nets):
        for layer in rendered(net):
            path = render_path(net, layer)
            if not path.is_file():
                raise UserError(f"{path} missing: run `dvc repro render@{net.name}` first")
            pictures[gallery_name(net, layer)] = path.read_bytes()
    return pictures


@cli
def main(argv=None):
    parser = stage_parser(__doc__)
    args = parser.parse_args(argv)
    # pipeline.nets alone (the validate stage checked the rest): the copy reruns only when the list does
    nets = read_key(load_params(args.params), "pipeline", PipelineConfig, "nets")
    pictures = gather(nets)
    with atomic_dir(OUT) as tmp:
        for name, data in pictures.items():
            (tmp / name).write_bytes(data)
    print(f"gallery: {len(pictures)} pictures in {OUT}/ ({', '.join(nets)})")


if __name__ == "__main__":
    sys.exit(main())
