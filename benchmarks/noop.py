"""`dvc repro` on an up-to-date pipeline against `dvc status` on the same: nothing to do should
cost about as much as finding out that there is nothing to do (goal: within 1.5x).

    python benchmarks/noop.py [--repeats 9] [--out benchmarks/results/noop.json]

The committed state of this checkout (`git archive HEAD`: dvc.yaml, dvc.lock, params.yaml,
stages/, src/) goes into a scratch folder with a hard-linked copy of the local DVC cache, is
committed to a fresh git repo there, and `dvc checkout` puts the outputs dvc.lock records in
place, so `dvc status` is clean (if the committed lock is stale, one `dvc repro` first brings
it up to date, and the script says so). Then, after one untimed warm-up of each, `dvc status`
and `dvc repro` run alternately ``--repeats`` times each, every one a fresh process as a user
types it; `dvc --version` gives the floor, the cost of starting DVC at all. Every repro must
run no stage.

Where the time goes is measured too: each command once under DVC's own profiler
(`--cprofile-dump`: how many times it loaded dvc.yaml and dvc.lock, its YAML parses and their
time, inflated by the profiler), the modules each imports (`python -X importtime`), and in one
process the pieces repro adds to status: importing networkx, and loading every stage a second
time (`repo.stage.load_all()`, which `collect_stages` calls after the index has loaded them).
"""

import argparse
import json
import os
import pstats
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench_common import RESULTS, cpu_name, machine, write_json

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
ENV.pop("CNN_INTERNALS_MIRROR", None)


def sh(cmd, cwd, check=True):
    result = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def scratch_project(dest: Path) -> dict:
    """HEAD of this checkout in ``dest``, with the DVC cache and the outputs checked out."""
    head = sh(["git", "rev-parse", "HEAD"], REPO).stdout.strip()
    archive = subprocess.run(["git", "archive", "--format=tar", head], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    cache = REPO / ".dvc" / "cache"
    if cache.is_dir():
        linked = subprocess.run(["cp", "-al", str(cache), str(dest / ".dvc" / "cache")], capture_output=True, check=False)
        if linked.returncode != 0:                       # another filesystem: copy instead
            shutil.copytree(cache, dest / ".dvc" / "cache", dirs_exist_ok=True)
    sh(["git", "init", "-q"], dest)
    sh(["git", "add", "-A"], dest)
    sh(["git", "-c", "user.name=noop benchmark", "-c", "user.email=noop@cnn-internals.invalid", "-c",
        "commit.gpgsign=false", "commit", "-q", "-m", f"HEAD {head} of {REPO}"], dest)
    checkout = sh(["dvc", "checkout"], dest, check=False)
    if checkout.returncode != 0:
        raise SystemExit(f"dvc checkout failed: the local cache lacks what dvc.lock at {head} records; run "
                         f"`dvc repro` in {REPO} first\n{checkout.stderr}")
    brought_up_to_date = False
    if json.loads(sh(["dvc", "status", "--json"], dest).stdout or "{}"):
        print(f"HEAD {head[:10]}: dvc.lock is stale against the committed code; one `dvc repro` first")
        sh(["dvc", "repro"], dest)
        brought_up_to_date = True
    assert json.loads(sh(["dvc", "status", "--json"], dest).stdout or "{}") == {}
    return {"commit": head, "brought_up_to_date_first": brought_up_to_date,
            "stages": len(sh(["dvc", "stage", "list", "--name-only"], dest).stdout.split()),
            "dvc_lock_bytes": (dest / "dvc.lock").stat().st_size, "dvc_yaml_bytes": (dest / "dvc.yaml").stat().st_size}


def child_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(cmd, cwd):
    """(wall seconds, CPU seconds of the process and its children, the result)."""
    cpu, start = child_cpu(), time.perf_counter()
    result = sh(cmd, cwd)
    return time.perf_counter() - start, child_cpu() - cpu, result


def check_noop(result):
    if "Running stage" in result.stdout or "up to date" not in result.stdout:
        raise SystemExit(f"`dvc repro` was not a no-op:\n{result.stdout}\n{result.stderr}")


def profile(project, args) -> dict:
    """One run of ``dvc args`` under DVC's cProfile: seconds in it, YAML parses and time."""
    dump = project / f".profile-{args[0]}"
    sh(["dvc", *args, "--cprofile-dump", str(dump)], project)
    stats = pstats.Stats(str(dump)).stats            # {(file, line, name): (cc, nc, tt, ct, callers)}
    dump.unlink()

    def find(suffix, name):
        return [v for (file, _, func), v in stats.items() if file.endswith(suffix) and func == name]

    parse = find("dvc/utils/serialize/_yaml.py", "parse_yaml")
    strict = find("dvc/dvcfile.py", "_load_yaml")
    run_fn = find("dvc/cli/command.py", "do_run")
    return {"command_s": round(run_fn[0][3], 3) if run_fn else None,
            "yaml_parses": sum(v[1] for v in parse), "yaml_s": round(sum(v[3] for v in parse), 3),
            "dvc_yaml_and_lock_loads": sum(v[1] for v in strict)}


def imports(project, args) -> dict:
    """{module: cumulative import seconds} of what ``dvc args`` imports (python -X importtime)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "dvc", *args], cwd=project, env=ENV,
                            capture_output=True, text=True, check=False)
    found = {}
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|\s*(\S+)", line)
        if match:
            found[match.group(2)] = int(match.group(1)) / 1e6
    return found


def extra_imports(repro, status) -> dict:
    """The imports repro makes and status does not, as the roots of those import trees (a module
    whose enclosing packages status imports too): {module: cumulative seconds}, largest first."""
    extra = {m: s for m, s in repro.items() if m not in status}
    roots = {m: s for m, s in extra.items()
             if not any(".".join(m.split(".")[:i]) in extra for i in range(1, m.count(".") + 1))}
    return dict(sorted(roots.items(), key=lambda kv: -kv[1]))


COMPONENTS = """
import json, statistics, sys, time
t = time.perf_counter(); import networkx; nx = time.perf_counter() - t
from dvc.repo import Repo
index, again = [], []
for _ in range(int(sys.argv[1])):
    repo = Repo(".")
    a = time.perf_counter(); repo.index; b = time.perf_counter()
    repo.stage.load_all(); c = time.perf_counter()
    index.append(b - a); again.append(c - b)
    repo.close()
print(json.dumps({"import_networkx_s": nx, "index_s": statistics.median(index),
                  "second_load_s": statistics.median(again)}))
"""


def components(project, repeats) -> dict:
    """In one process: importing networkx (repro's DAG; status never imports it), building the
    repo index (dvc.yaml + dvc.lock: both commands do it) and `repo.stage.load_all()` once
    more, the second load repro makes in `collect_stages`. Medians, seconds."""
    result = sh([sys.executable, "-c", COMPONENTS, str(repeats)], project)
    return {k: round(v, 3) for k, v in json.loads(result.stdout).items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9,
                        help="timed runs of each command (default 9: single runs vary by +-20%% on a shared VM)")
    parser.add_argument("--out", type=Path, default=RESULTS / "noop.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="noop-") as tmp:
        project = Path(tmp)
        setup = scratch_project(project)
        version = sh(["dvc", "--version"], project).stdout.strip()
        for cmd in (["dvc", "status"], ["dvc", "repro"], ["dvc", "--version"]):   # warm-up: state db, page cache
            sh(cmd, project)
        times = {"status": [], "repro": [], "version": []}
        cpu = {"status": [], "repro": [], "version": []}
        for _ in range(args.repeats):
            for name, cmd in (("status", ["dvc", "status"]), ("repro", ["dvc", "repro"]),
                              ("version", ["dvc", "--version"])):
                seconds, cpu_seconds, result = timed_run(cmd, project)
                if name == "repro":
                    check_noop(result)
                times[name].append(round(seconds, 4))
                cpu[name].append(round(cpu_seconds, 4))
        medians = {name: statistics.median(values) for name, values in times.items()}
        cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
        ratio = medians["repro"] / medians["status"]
        cpu_ratio = cpu_medians["repro"] / cpu_medians["status"]
        profiles = {name: profile(project, [name]) for name in ("status", "repro")}
        mods = {name: imports(project, [name]) for name in ("status", "repro")}
        extra = extra_imports(mods["repro"], mods["status"])
        parts = components(project, args.repeats)

    info = machine(torch.device("cpu"))
    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs; DVC {version}; {setup['stages']} stages, "
          f"dvc.lock {setup['dvc_lock_bytes']} bytes")
    print(f"baseline  `dvc status`     median {medians['status']:.3f} s  {times['status']}")
    print(f"ours      `dvc repro`      median {medians['repro']:.3f} s  {times['repro']}")
    print(f"ratio repro / status: {ratio:.2f} (goal <= 1.5); floor `dvc --version` {medians['version']:.3f} s")
    print(f"CPU time (user + sys), medians: status {cpu_medians['status']:.3f} s, repro {cpu_medians['repro']:.3f} s, "
          f"ratio {cpu_ratio:.2f}; --version {cpu_medians['version']:.3f} s")
    for name, p in profiles.items():
        print(f"  {name:6s} under cProfile: {p['command_s']} s in the command, {p['dvc_yaml_and_lock_loads']} "
              f"loads of dvc.yaml/dvc.lock, {p['yaml_parses']} YAML parses taking {p['yaml_s']} s")
    print(f"  repro imports {len(set(mods['repro']) - set(mods['status']))} modules status does not, "
          f"{sum(extra.values()):.3f} s of imports: " + ", ".join(f"{m} {s * 1000:.0f} ms" for m, s in
                                                                  list(extra.items())[:6]))
    print(f"  in one process: import networkx {parts['import_networkx_s']:.3f} s (repro only), index of dvc.yaml + "
          f"dvc.lock {parts['index_s']:.3f} s (both), loading every stage again {parts['second_load_s']:.3f} s "
          "(repro only)")
    write_json(args.out, {
        "what": "no-op `dvc repro` vs `dvc status` on the up-to-date pipeline (HEAD, committed params)",
        "command": "python benchmarks/noop.py" + (f" --repeats {args.repeats}" if args.repeats != 9 else ""),
        "dvc": version, "machine": info, "project": setup, "repeats": args.repeats,
        "seconds": times, "median_s": {k: round(v, 4) for k, v in medians.items()},
        "min_s": {k: min(v) for k, v in times.items()},
        "ratio_repro_to_status": round(ratio, 3), "goal_ratio": 1.5, "within_goal": ratio <= 1.5,
        "cpu_seconds": cpu, "cpu_median_s": {k: round(v, 4) for k, v in cpu_medians.items()},
        "cpu_ratio_repro_to_status": round(cpu_ratio, 3),
        "profile": profiles, "components_s": parts,
        "imports_only_in_repro": {"modules": len(set(mods["repro"]) - set(mods["status"])),
                                  "seconds": round(sum(extra.values()), 3),
                                  "largest_ms": {m: round(s * 1000, 1) for m, s in list(extra.items())[:10]}},
    })


if __name__ == "__main__":
    main()
