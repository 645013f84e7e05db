#!/usr/bin/env bash
# The real `dvc metrics diff` and `dvc plots diff` output: in a temporary clone, train
# LeNet-5 with twice the learning rate, commit that on top, and diff it against the commit
# before. Writes docs/metrics_diff.txt and docs/plots_diff/*.png. About two minutes on 2 cores.
#   bash docs/diff_example.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/repo"
cd "$work/repo"
dvc cache dir --local "$repo/.dvc/cache"     # the checkout's cache: the baseline is not rebuilt
dvc checkout -q
python - <<'PY'
import yaml
params = yaml.safe_load(open("params.yaml"))
text = open("params.yaml").read()
old = params["train"]["lenet5"]["lr"]
open("params.yaml", "w").write(text.replace(f"    lr: {old}\n", f"    lr: {old * 2}\n", 1))
PY
dvc repro -q
git -c user.name=docs -c user.email=docs@localhost commit -qam "LeNet-5 with twice the learning rate"
{ echo '$ dvc metrics diff HEAD~1'; dvc metrics diff HEAD~1; echo; echo '$ dvc params diff HEAD~1'; dvc params diff HEAD~1; } \
    > "$repo/docs/metrics_diff.txt"
rm -rf "$repo/docs/plots_diff"
python -m cnn_internals.plots_png --out "$repo/docs/plots_diff" HEAD~1 HEAD
