"""Streaming top-k mining on AlexNet (or VGG-16) against a bare forward pass: time and peak memory, in one run.

    python benchmarks/mining.py [--quick] [--device auto|cpu|cuda] [--images N] [--out FILE]
    python benchmarks/mining.py --net vgg16 --images 85 --batch 85 --repeats 1   # the heaviest CPU job

--net vgg16: torchvision's VGG-16 through the registry (random weights), mined at its five shown
layers conv1_2 .. conv5_3 (features.2 .. features.28), the bare forward being features[:29];
batches of 85, what the mine stage gathers of Imagenette's 256x256 images (16 MB of uint8).
It also prints the time the mine stage would take over Imagenette's 3,925 val images at the
measured rate (--estimate). Figures go to benchmarks/results/mining_vgg16.json.

Workload. A random-weight AlexNet (benchmarks/bench_common.py; float32, eval mode, 224x224
inputs) and N random images in batches of 64 (N = 256 on CPU, 2048 on CUDA, or --images).
  ours   cnn_internals.engine.mining.top_k_activations(model, ["conv1", ..., "conv5"], batches, k=9)
  bare   torch.no_grad() forward of an nn.Sequential slice of the same model up to conv5 (none
         of our code, no hooks) over the same batches, outputs thrown away.

Time: the batches are made before the clock starts (generating them is not what is compared);
time.perf_counter, one warm-up pass, the median of --repeats passes (3), torch.cuda.synchronize
on CUDA. Goal: ours / bare <= 1.2.

Memory: each of ours and bare, at N and at 4N images, runs in a fresh Python process (this
script re-invoked with a hidden flag) that builds the model, then streams the batches from a
generator seeded per batch, so the data set itself is never held and cannot mask what the miner
keeps. On CPU the figure is the growth of the peak resident set size over the run: the peak
(VmHWM) is reset to the current RSS just before the pass (/proc/self/clear_refs), and the
growth is the peak after minus the RSS before. resource.getrusage's ru_maxrss cannot be reset
and, after fork+exec, starts from the parent's peak, so it is only the fallback off Linux. The
children run with MALLOC_MMAP_THRESHOLD_=65536 (see MALLOC_ENV) so RSS follows the live tensors
rather than glibc's heap fragmentation. On CUDA it is torch.cuda.max_memory_allocated over
the run minus the memory allocated before it. A streaming
miner's growth should not depend on N (4N / N about 1) and should sit close to the bare forward's.

Figures go to benchmarks/results/mining.json (sorted keys) or --out. The full run takes about
1.5 minutes on 2 CPU cores.

--quick (smoke test, about 15 s on 2 cores): N = 16 in batches of 16 (so 4N is 4 batches of the
same size), one repeat. Quick figures are written only where --out says.

1 vs N processes (``mine.<net>.nproc``), the mine stage's own work, instead of the above:

    python benchmarks/mining.py --processes 1 2                  # AlexNet on the CPU, 4 batches of 85
    python benchmarks/mining.py --processes 1 2 --net vgg16      # VGG-16 (about 2.8 img/s on 2 cores)
    python benchmarks/mining.py --processes 1 2 --quick          # smoke test: 2 batches of 4, 1 repeat
    python benchmarks/mining.py --processes 1 --net vgg16 --device cuda   # one GPU's rate (gpu.sh)

Each count runs in fresh processes (torch.multiprocessing.spawn; several of them join a process
group as torchrun's ranks do: gloo on the CPU, NCCL on CUDA, one GPU a rank, skipped where there
are fewer GPUs). The net as the stage builds it (params.yaml's train.<net>, random weights), N
random uint8 images of its dataset's shape (Imagenette's 256x256x3) in the stage's batches (16
MB: 85 images; --batch), each rank holding its own share: gathered from uint8, moved to the
device and turned into eval inputs by the net's transform (data.loader.batches), mined at every
shown layer and the classes (top_k_activations over the rank's run of whole batches), gathered
to rank 0 and merged (merge_top_k), as stages/mine.py does. Threads as the stage has them: one
process the CPU pin's 2, each of N ranks cores / N (or OMP_NUM_THREADS). Timed on rank 0 between
two barriers: the median of --repeats (3) after a warm-up. Prints each count's images/s, its
speed over one process's, and whether its merged tables are bit for bit one process's (they are
at the same threads per process, not otherwise promised); on CUDA also what mining ImageNet's
val (50,000) and train (1,281,167) images would take at the rate measured (a projection).
Figures go to benchmarks/results/mining_processes_<net>.json (_cuda on CUDA) or --out; quick
ones only where --out says.
"""

import argparse
import dataclasses
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cnn_internals.data.loader import batches as stage_batches
from cnn_internals.data.statistics import image_statistics
from cnn_internals.engine.mining import merge_top_k, top_k_activations
from cnn_internals.runtime.cpu_pin import pin_threads
from cnn_internals.runtime.distributed import batch_share, gather_to_main, process_group, rank_threads

from bench_common import (
    CONV_LAYERS,
    INPUT_SHAPE,
    RESULTS,
    alexnet,
    describe,
    machine,
    pick_device,
    proc_status,
    synchronize,
    timed,
    truncated,
    write_json,
)

K = 9
BATCH = 64
DEFAULT_IMAGES = {"cpu": 256, "cuda": 2048}
QUICK_IMAGES = 16
GOAL_TIME_RATIO = 1.2
# For the memory children: a fixed glibc mmap threshold (this also turns off its dynamic growth),
# so every tensor buffer over 64 KiB is its own mapping, returned to the OS when freed. With the
# default, glibc raises the threshold as big blocks are freed and serves later ones from a heap
# that only grows, and peak RSS then climbs with the number of batches for the bare forward too:
# it would measure fragmentation, not what the miner keeps. Respected if already set.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
SEED = 0


def lazy_batches(n, batch, device):
    """N random images in batches, each batch made on demand from its own seed."""
    for first in range(0, n, batch):
        g = torch.Generator().manual_seed(SEED + first)
        yield torch.randn(min(batch, n - first), *INPUT_SHAPE, generator=g).to(device)


VAL_IMAGES = 3925      # Imagenette's val split (imagenette2-320)


def workload(net, device):
    """(model, {shown name: module path}, trunk): the net, where it is mined, and a plain
    nn.Sequential of the same modules up to the deepest of them (the bare forward)."""
    if net == "alexnet":
        model = alexnet(device=device)
        return model, {name: name for name in CONV_LAYERS}, truncated(model, "conv5")
    from cnn_internals.models import NETS

    torch.manual_seed(SEED)
    spec = NETS[net]
    model = spec.build({"weights": "scratch", "augment": True, "lighting_std": 0.1}).float().to(device).eval()
    return model, spec.layer_paths, model.features[:29]


def mine(model, batches, layers=None):
    return top_k_activations(model, layers or list(CONV_LAYERS), batches, K)


def bare_forward(trunk, batches):
    with torch.no_grad():
        for batch in batches:
            trunk(batch)


def time_both(n, batch, repeats, device, net="alexnet"):
    """Median seconds of (bare, ours) over the same N images, made before the clock starts."""
    model, layers, trunk = workload(net, device)
    batches = list(lazy_batches(n, batch, device))
    bare_s, _ = timed(lambda: bare_forward(trunk, batches), repeats, device)
    ours_s, _ = timed(lambda: mine(model, batches, layers), repeats, device)
    return bare_s, ours_s


def _start_rss_peak():
    """Reset the peak RSS to the current RSS and return the current RSS (bytes).

    Linux: writing 5 to /proc/self/clear_refs resets VmHWM, the process's peak RSS. Without
    it the peak would keep what building the model briefly took, and ru_maxrss is worse still:
    after fork+exec it starts from the *parent's* peak, which hides the child's growth.
    Elsewhere: ru_maxrss, which is only an upper bound on the start."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return proc_status("VmRSS")
    except (OSError, KeyError):
        return _ru_maxrss_bytes()


def _peak_rss():
    try:
        return proc_status("VmHWM")
    except (OSError, KeyError):
        return _ru_maxrss_bytes()


def _ru_maxrss_bytes():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024   # bytes on macOS, KiB on Linux


def measure_memory(kind, n, batch, device, net="alexnet"):
    """In this (fresh) process: peak memory growth of one pass of ``kind`` over N lazy images."""
    model, layers, trunk = workload(net, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = _start_rss_peak()
    if kind == "ours":
        mine(model, lazy_batches(n, batch, device), layers)
    else:
        bare_forward(trunk, lazy_batches(n, batch, device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        after = torch.cuda.max_memory_allocated(device)
    else:
        after = _peak_rss()
    return {"before_bytes": before, "peak_bytes": after, "growth_bytes": after - before}


def memory_in_fresh_process(kind, n, batch, device, net="alexnet"):
    command = [sys.executable, str(Path(__file__).resolve()), "--_memory", kind, "--images", str(n),
               "--batch", str(batch), "--device", device.type, "--net", net]
    env = {**MALLOC_ENV, **os.environ}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"memory measurement {kind} N={n} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ratio_or_none(a, b):
    return a / b if b else None


def mib(value):
    return value / 2**20


# ---------------------------------------------------------------- 1 vs N processes

STAGE_BATCH_BYTES = 2 ** 24       # stages/mine.py's BATCH_BYTES: a batch holds about 16 MB of uint8
SHAPES = {"mnist": (28, 28), "imagenette": (256, 256, 3)}     # a prepared image of each dataset
PROCESS_BATCHES = {"cpu": 4, "cuda": 32}                      # N, in the stage's batches
IMAGENET = {"val": 50_000, "train": 1_281_167}


def stage_net(net):
    """(registry entry, train.<net> from params.yaml, the shape of one uint8 image of its data)."""
    import yaml  # here: the other measurements run where only torch is installed (gpu.sh)

    from cnn_internals.models import NETS

    spec = NETS[net]
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    return spec, params["train"][net], SHAPES[spec.dataset]


def random_images(share, batch, shape):
    """uint8 images ``share`` (a range of whole batches) of a random split, each batch from its
    own seed: every rank makes its own part, the same pixels whatever the number of ranks."""
    parts = [np.random.default_rng(SEED + first).integers(0, 256, (min(batch, share.stop - first), *shape),
                                                          dtype=np.uint8)
             for first in range(share.start, share.stop, batch)]
    return np.concatenate(parts) if parts else np.zeros((0, *shape), dtype=np.uint8)


def mining_rank(rank, ranks, port, net, n, batch, repeats, device_type, out):
    """One of ``ranks`` processes doing what stages/mine.py does on it (under torchrun when
    ``ranks`` > 1); rank 0 saves the median seconds and the merged tables to ``out``."""
    if ranks > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                          WORLD_SIZE=str(ranks), LOCAL_WORLD_SIZE=str(ranks))
        torch.set_num_threads(int(rank_threads(ranks)))         # what launch gives each rank
    elif device_type == "cpu":
        pin_threads()                                           # what device_for gives one process
    spec, config, shape = stage_net(net)
    with process_group(torch.device(device_type), ranks, "benchmark") as (world, device):
        share = batch_share(n, batch, world)
        images = random_images(share, batch, shape)
        labels = np.zeros(len(images), dtype=np.int64)
        stats = image_statistics(random_images(range(min(n, batch)), batch, shape))
        torch.manual_seed(SEED)
        model = spec.build(config).float().to(device).eval()
        inputs = spec.inputs(stats, config, device)

        def once():
            if world.size > 1:
                dist.barrier()
            stream = (inputs.eval(x) for x, _ in stage_batches(images, labels, np.arange(len(images)), batch, device))
            part = top_k_activations(model, spec.layer_paths, stream, K, classes=True, start=share.start) \
                if len(share) else None
            parts = [p for p in gather_to_main(part, world) or [] if p is not None]
            merged = {name: merge_top_k([p[name] for p in parts], K) for name in parts[0]} if world.main else None
            synchronize(device)
            if world.size > 1:
                dist.barrier()
            return merged

        seconds, merged = timed(once, repeats, device)
        if world.main:
            torch.save({"seconds": seconds, "threads": torch.get_num_threads() if device.type == "cpu" else None,
                        "top": {name: dataclasses.asdict(t) for name, t in merged.items()}}, out)


def mine_on(ranks, net, n, batch, repeats, device):
    """(median seconds, threads of each process on the CPU, merged tables) of mining N images on
    ``ranks`` fresh processes."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mined.pt"
        mp.spawn(mining_rank, args=(ranks, port, net, n, batch, repeats, device.type, str(out)), nprocs=ranks)
        found = torch.load(out, weights_only=True)
    return found["seconds"], found["threads"], found["top"]


def same_tables(a, b):
    return a.keys() == b.keys() and all(
        (a[name][f] is None and b[name][f] is None) or torch.equal(a[name][f], b[name][f])
        for name in a for f in a[name])


def processes_main(args, device):
    """--processes: the mine stage's work on 1 and on N processes (see the docstring)."""
    spec, _, shape = stage_net(args.net)
    batch = 4 if args.quick else (args.batch or max(1, min(512, STAGE_BATCH_BYTES // int(np.prod(shape)))))
    n = args.images or (2 if args.quick else PROCESS_BATCHES[device.type]) * batch
    repeats = args.repeats or (1 if args.quick else 3)
    counts = sorted(set(args.processes) | {1})
    info = machine(device)
    print(describe(info))
    print(f"{args.net}: the mine stage's work (top-{K} at {', '.join(spec.layer_paths)} and the classes) over N = {n} "
          f"random {'x'.join(map(str, shape))} uint8 images in batches of {batch}, on {', '.join(map(str, counts))} "
          f"processes; median of {repeats} after a warm-up{', QUICK' if args.quick else ''}")
    figures, first = {}, None
    for count in counts:
        if device.type == "cuda" and count > torch.cuda.device_count():
            print(f"  {count} processes skipped: {torch.cuda.device_count()} GPU(s) here")
            continue
        seconds, threads, top = mine_on(count, args.net, n, batch, repeats, device)
        figure = {"seconds": seconds, "images_per_s": n / seconds, "threads_per_process": threads}
        if first is None:
            first = (seconds, top)
        else:
            figure["over_1_process_speed"] = first[0] / seconds
            figure["identical_to_1_process"] = same_tables(top, first[1])
        figures[str(count)] = figure
        line = f"  {count} process{'es' if count > 1 else '':2}: {n / seconds:8.2f} img/s ({seconds:.2f} s"
        line += f", {threads} thread{'s' if threads != 1 else ''}{' each' if count > 1 else ''})" if threads else ")"
        if "over_1_process_speed" in figure:
            line += (f"   x{figure['over_1_process_speed']:.2f} one process's speed; tables bit-identical to one "
                     f"process's: {'yes' if figure['identical_to_1_process'] else 'no'}")
        print(line)
    if device.type == "cuda":
        for count, figure in figures.items():
            rate = figure["images_per_s"]
            print(f"  projection at {rate:.0f} img/s on {count} GPU(s): ImageNet val {IMAGENET['val'] / rate / 60:.1f} "
                  f"min, train {IMAGENET['train'] / rate / 3600:.2f} h")
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    out = args.out or (None if args.quick else RESULTS / f"mining_processes_{args.net}{suffix}.json")
    if out is not None:
        write_json(out, {"machine": info,
                         "config": {"net": args.net, "quick": args.quick, "images": n, "batch": batch, "k": K,
                                    "layers": list(spec.layer_paths), "classes": True, "repeats": repeats,
                                    "image": list(shape), "dtype": "uint8 -> float32"},
                         "processes": figures})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N=16 in batches of 16, 1 repeat (smoke test)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--images", type=int, default=None, help="N (default 256 on CPU, 2048 on CUDA, quick 16)")
    parser.add_argument("--batch", type=int, default=None,
                        help=f"images per batch (default {BATCH}; --processes: the stage's, 85 for 256x256x3)")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes (default 3, quick 1)")
    parser.add_argument("--out", default=None, help="JSON file (default benchmarks/results/mining.json; "
                                                    "--quick writes only where --out says)")
    parser.add_argument("--net", choices=("alexnet", "vgg16"), default="alexnet")
    parser.add_argument("--processes", type=int, nargs="+", default=None,
                        help="1 vs N processes of the mine stage's work (1 is always timed; see the docstring)")
    parser.add_argument("--_memory", choices=("ours", "bare"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = pick_device(args.device)
    if args.processes:
        processes_main(args, device)
        return
    args.batch = args.batch or BATCH

    if args._memory:   # child process of memory_in_fresh_process
        print(json.dumps(measure_memory(args._memory, args.images, args.batch, device, args.net)))
        return

    n = args.images or (QUICK_IMAGES if args.quick else DEFAULT_IMAGES[device.type])
    batch = min(args.batch, n)
    repeats = args.repeats or (1 if args.quick else 3)
    info = machine(device)
    print(describe(info))
    layers = list(CONV_LAYERS) if args.net == "alexnet" else list(workload(args.net, torch.device("meta"))[1])
    print(f"{args.net}: top-{K} over {', '.join(layers)}; N = {n} random images in batches of {batch}; "
          f"median of {repeats} after a warm-up{', QUICK' if args.quick else ''}")

    bare_s, ours_s = time_both(n, batch, repeats, device, args.net)
    ratio = ours_s / bare_s
    print(f"\ntime for {n} images:  bare forward to {layers[-1]} {bare_s:.3f} s ({n / bare_s:.1f} img/s)   "
          f"ours {ours_s:.3f} s ({n / ours_s:.1f} img/s)")
    estimate_min = VAL_IMAGES / (n / ours_s) / 60
    print(f"  at that rate, mining Imagenette's {VAL_IMAGES:,} val images: {estimate_min:.1f} min")
    print(f"  ours / bare  {ratio:.3f}   goal <= {GOAL_TIME_RATIO}: {'met' if ratio <= GOAL_TIME_RATIO else 'MISSED'}")

    what = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS (VmHWM reset before the pass)"
    print(f"\npeak memory growth over one pass, {what}, each in a fresh process:")
    memory = {}
    for kind in ("bare", "ours"):
        memory[kind] = {}
        for images in (n, 4 * n):
            m = memory_in_fresh_process(kind, images, batch, device, args.net)
            memory[kind][str(images)] = m
            print(f"  {kind:4}  N = {images:5d}: {mib(m['growth_bytes']):8.1f} MiB "
                  f"(from {mib(m['before_bytes']):.1f} to {mib(m['peak_bytes']):.1f} MiB)")
    growth = {kind: {images: memory[kind][images]["growth_bytes"] for images in memory[kind]} for kind in memory}
    memory_ratios = {
        "ours_4n_over_n": ratio_or_none(growth["ours"][str(4 * n)], growth["ours"][str(n)]),
        "bare_4n_over_n": ratio_or_none(growth["bare"][str(4 * n)], growth["bare"][str(n)]),
        "ours_over_bare_at_n": ratio_or_none(growth["ours"][str(n)], growth["bare"][str(n)]),
        "ours_over_bare_at_4n": ratio_or_none(growth["ours"][str(4 * n)], growth["bare"][str(4 * n)]),
    }
    for name, value in memory_ratios.items():
        print(f"  {name:22} " + ("   n/a" if value is None else f"{value:6.3f}"))

    name = "mining.json" if args.net == "alexnet" else f"mining_{args.net}.json"
    out = args.out or (None if args.quick else RESULTS / name)
    if out is not None:
        write_json(out, {
            "machine": info,
            "config": {"net": args.net, "quick": args.quick, "images": n, "batch": batch, "k": K, "layers": layers,
                       "repeats": repeats, "input": list(INPUT_SHAPE), "dtype": "float32",
                       "memory_measure": what,
                       "memory_child_env": {k: os.environ.get(k, v) for k, v in MALLOC_ENV.items()}},
            "time_s": {"bare": bare_s, "ours": ours_s},
            "images_per_s": {"bare": n / bare_s, "ours": n / ours_s},
            "estimate_val_minutes": {"images": VAL_IMAGES, "ours": estimate_min},
            "ours_over_bare_time": ratio,
            "goal_ours_over_bare_time": GOAL_TIME_RATIO,
            "goal_met": ratio <= GOAL_TIME_RATIO,
            "memory": memory,
            "memory_ratios": memory_ratios,
        })


if __name__ == "__main__":
    main()
