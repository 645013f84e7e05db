#!/usr/bin/env bash
# The real `dvc exp show` table: in a temporary clone, a queued sweep of two settings run
# by two workers, then one experiment run directly in the workspace, then the table. Writes docs/exp_show.md.
# About five minutes on 2 cores.
#   bash docs/exp_example.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'dvc queue stop --kill >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git clone -q "$repo" "$work/repo"
cd "$work/repo"
dvc cache dir --local "$repo/.dvc/cache"     # the checkout's cache: the baseline is not rebuilt
dvc checkout -q

dvc exp run -q --queue -n epochs-10 -S train.lenet5.epochs=10
dvc exp run -q --queue -n epochs-60 -S train.lenet5.epochs=60
dvc queue start -j 2
# The workers run detached: wait until nothing is queued or running.
while dvc queue status 2>/dev/null | grep -E 'Queued|Running' >/dev/null; do sleep 5; done
dvc queue status
dvc exp run -q -n lr-x2 -S train.lenet5.lr=0.002     # in the workspace, which keeps its results

columns='Experiment|train.lenet5.lr|train.lenet5.epochs|epochs|train_loss|test_loss|test_accuracy'
{
    echo "\$ dvc exp show --md --drop '.*' --keep '$columns'"
    echo
    dvc exp show --md --no-pager --drop '.*' --keep "$columns"
} > "$repo/docs/exp_show.md"
cat "$repo/docs/exp_show.md"
