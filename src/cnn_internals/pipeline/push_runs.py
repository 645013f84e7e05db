"""`dvc push --run-cache`, plus the git-tracked outputs its run entries need elsewhere.

    python -m cnn_internals.push_runs            # to the default remote
    python -m cnn_internals.push_runs -r store

A GPU box's results reach a laptop without rerunning through DVC's run-cache: `dvc push
--run-cache` there, `dvc repro --pull --allow-missing` here. But DVC pushes only the files of
cached outputs (treeverse/dvc#5749), and this pipeline keeps its metrics, training curves and
pictures in git (`cache: false`, so the README shows them on a fresh clone): their run entries
point at files the remote never gets, and on the laptop stats, train and render would rerun.
DVC does copy those files into the local cache when it records a run; this pushes them too,
through DVC's own run-cache and transfer code, so every stage restores.
"""

import sys
from pathlib import Path

from cnn_internals.core.errors import UserError
from cnn_internals.pipeline.cli import ArgumentParser, cli


def push_runs(root: str | Path = ".", remote: str | None = None) -> tuple[int, int]:
    """`dvc push --run-cache` for the repository at ``root`` and the objects its run entries
    name; returns (run entries, objects pushed)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            repo.push(remote=remote, run_cache=True)
            runs = repo.cache.legacy.fs.join(repo.cache.legacy.path, "runs")
            fs = repo.cache.legacy.fs
            entries = []
            if fs.exists(runs):
                for path in fs.find(runs):
                    key, value = fs.parts(path)[-2:]
                    entries.append((key, value))
            pushed = 0
            for objs in repo.stage_cache.get_used_objs(entries).values():
                result = repo.cloud.push(objs, remote=remote)
                if result.failed:
                    raise UserError(f"{len(result.failed)} run-cache objects failed to upload: rerun to retry")
                pushed += len(result.transferred)
    except DvcException as err:
        raise UserError(f"dvc: {err}") from None
    return len(entries), pushed


@cli
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m cnn_internals.push_runs",
                            description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("-r", "--remote", help="DVC remote name (default: the default remote)")
    args = parser.parse_args(argv)
    entries, pushed = push_runs(remote=args.remote)
    print(f"pushed {entries} run-cache entries and {pushed} files of their outputs")


if __name__ == "__main__":
    sys.exit(main())
