"""The docs' benchmark tables, generated from benchmarks/results/*.json: a figure is written once,
by the script that measured it, and the pages are rebuilt from there.

    python benchmarks/tables.py            # rewrite the generated tables in docs/
    python benchmarks/tables.py --check    # exit 1 if a page differs from its JSON (a test runs this)

Each table sits in its page between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``; the text
around it is written by hand. A row's words say what was measured; its numbers come from the JSON
named in its first column, formatted here. After rerunning a benchmark, run this script.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def n(value: float, digits: int = 0) -> str:
    """A number with thousands separators and ``digits`` decimals."""
    return f"{value:,.{digits}f}"


def s(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f} s"


def x(value: float, digits: int = 2) -> str:
    return f"**{value:.{digits}f}x**"


def mib(value: float, digits: int = 1) -> str:
    return f"{value / 2 ** 20:,.{digits}f} MiB"


def row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def table(header: tuple, rows: list) -> str:
    return "\n".join([row(*header), row(*["---"] * len(header)), *rows])


# ---------------------------------------------------------------- docs/benchmarks.md: Speed

def speed() -> str:
    a, ag = load("alexnet_input"), load("alexnet_input_cuda")
    t, tg = load("training")["nets"], load("training_cuda")["nets"]
    p, pg, pf, fv = load("projection"), load("projection_cuda"), load("projection_fc"), load("feature_vis")
    m, mg, mv, mf = load("mining"), load("mining_cuda"), load("mining_vgg16"), load("mining_fc")
    rf, prep, pre = load("receptive_field"), load("imagenette_prepare"), load("pretrained_load")
    mem, sc = load("stage_memory"), load("scan")
    ips = a["images_per_s"]
    a_mem = [a["memory"][k]["peak_growth_bytes"] for k in ("1024", "4096")]
    stage_growth = {net: {stage: mem[net]["4N"]["peak_rss_mib"][stage] - mem[net]["N"]["peak_rss_mib"][stage]
                          for stage in mem[net]["N"]["peak_rss_mib"]} for net in ("lenet5", "alexnet")}
    grown = "; ".join(f"{'LeNet-5' if net == 'lenet5' else 'AlexNet'}: "
                      + ", ".join(f"{stage} {v:+.1f}" for stage, v in growth.items()) + " MiB"
                      for net, growth in stage_growth.items())
    arrays = {net: mem[net]["4N"]["array_mib"] - mem[net]["N"]["array_mib"] for net in ("lenet5", "alexnet")}
    le, al = t["lenet5"], t["alexnet"]
    leg, alg = tg["lenet5"], tg["alexnet"]
    layers = sorted(p["layers"])
    m_mem = m["memory"]["ours"]
    mg_mem = mg["memory"]["ours"]
    mv_mem = mv["memory"]
    rf_ours = {name: [layer["ours_s"] for layer in net["layers"].values()] for name, net in rf["nets"].items()}
    rf_ratio = {name: [layer["ratio_to_forward"] for layer in net["layers"].values()] for name, net in rf["nets"].items()}
    rows = [
        row("`alexnet_input.py`, CPU: AlexNet's train-time input path (uint8 memmap -> random crop, flip, PCA "
            f"lighting, float batch), batch {a['config']['batch']}", "per-image float transforms",
            f"{n(ips['naive'])} img/s", f"{n(ips['ours_reused_buffers'])} img/s (training reuses its output buffer); "
            f"{n(ips['ours'])} with a fresh buffer per batch", x(a["ours_over_naive"]["ours_reused_buffers"], 1),
            f">= {n(a['goal_images_per_s'])} img/s"),
        row(f"same, peak RSS growth at N = {n(1024)} vs 4N = {n(4096)} images", "", "",
            f"{mib(a_mem[0], 0)} / {mib(a_mem[1], 0)} (only the memory map grows)", x(a["memory_growth_4n_over_n"]),
            "flat in N"),
        row("`stage_memory.py`, CPU: peak RSS of each stage script, N vs 4N images per split (LeNet-5 "
            f"{n(mem['lenet5']['N']['images_per_split'])}/{n(mem['lenet5']['4N']['images_per_split'])} MNIST-shaped; "
            f"AlexNet {n(mem['alexnet']['N']['images_per_split'])}/{n(mem['alexnet']['4N']['images_per_split'])} "
            "Imagenette-shaped, random weights)",
            f"the prepared arrays grow {arrays['lenet5']:.0f} MiB (LeNet-5) / {arrays['alexnet']:.0f} MiB (AlexNet)", "",
            grown + " (AlexNet's mine and render: about the held-out array's growth, its resident pages)",
            "no growth beyond the map", "flat in N"),
        row(f"`training.py --net lenet5`, CPU: LeNet-5 training, batch {le['batch']}",
            "plain PyTorch loop, same model, loss and optimizer, float NCHW inputs already in memory",
            f"{n(le['plain_images_per_s'])} img/s",
            f"{n(le['ours_images_per_s'])} img/s (channels-last, fused scaled tanh and optimizer; "
            f"{n(le['ours_nchw_images_per_s'])} in NCHW)",
            f"{x(1 / le['ours_over_plain_time'])} faster (rounds {1 / le['ours_over_plain_time_range'][1]:.2f}-"
            f"{1 / le['ours_over_plain_time_range'][0]:.2f}x)", ">= 1.5x"),
        row(f"same, AlexNet, {n(al['images'])} images an epoch (466 MB checkpoint each; measured before the fused "
            "optimizer)", "same", f"{n(al['plain_images_per_s'], 1)} img/s",
            f"{n(al['ours_images_per_s'], 1)} img/s ({n(al['ours_no_checkpoint_images_per_s'], 1)} without the "
            "checkpoint)", f"{x(1 / al['ours_over_plain_time'])} faster", "no slower"),
        row("same, 2 processes (DDP over gloo, 1 core each)", "same",
            f"LeNet-5 {n(le['plain_images_per_s'])} / AlexNet {n(al['plain_images_per_s'], 1)} img/s",
            f"{n(le['ours_2_ranks_images_per_s'])} / {n(al['ours_2_ranks_images_per_s'], 1)} img/s",
            f"{le['ours_2_ranks_over_plain_time']:.2f}x / {al['ours_2_ranks_over_plain_time']:.2f}x the time",
            "(2 cores: see [On several GPUs](gpus.md#on-several-gpus))"),
        row(f"`training.py`, H200: AlexNet training steps, batch {alg['batch']}",
            "plain loop (float32, NCHW, in-memory inputs)", f"{n(alg['plain_images_per_s'])} img/s",
            f"**{n(alg['ours_no_checkpoint_images_per_s'])} img/s** (mixed precision + channels-last, epoch "
            "checkpoint aside)", f"{x(1 / alg['ours_no_checkpoint_over_plain_time'], 1)} faster", ""),
        row(f"same, with the 466 MB checkpoint written after every {n(alg['images'])}-image epoch in line", "", "",
            f"{n(alg['ours_images_per_s'])} img/s", f"{alg['ours_over_plain_time']:.2f}x the time",
            "(since then the write runs in the background; not remeasured on a GPU)"),
        row(f"`training.py`, H200: LeNet-5, batch {leg['batch']}", "plain LeNet (Conv/Tanh/AvgPool, cross-entropy)",
            f"{n(leg['plain_images_per_s'])} img/s", f"{n(leg['ours_images_per_s'])} img/s",
            f"{leg['ours_over_plain_time']:.1f}x the time", "(ours is the paper's net: C3 table, RBF, eq. 9 loss)"),
        row("`alexnet_input.py`, H200", "per-image float transforms", f"{n(ag['images_per_s']['naive'])} img/s",
            f"{n(ag['images_per_s']['ours'])} img/s ({n(ag['images_per_s']['ours_reused_buffers'])} reusing buffers)",
            f"**{ag['ours_over_naive']['ours']:.0f}x**", f"feeds the {n(alg['ours_no_checkpoint_images_per_s'])} img/s step"),
        row(f"`projection.py`, CPU: guided backprop of {p['config']['rows_per_layer']} units at each of AlexNet's "
            f"{layers[0]}-{layers[-1]}", "floor: forward to the layer + one `autograd.grad`, no hooks",
            s(p["total_s"]["floor_best_s"]), s(p["total_s"]["ours_guided_backprop_s"]), x(p["ratios"]["ours_over_floor"]),
            f"<= {p['goals']['ours_over_floor']}x"),
        row("same, CPU", "Captum `NeuronGuidedBackprop`, batched, best chunk", s(p["total_s"]["captum_batched_best_s"]),
            s(p["total_s"]["ours_guided_backprop_s"]), x(p["ratios"]["ours_over_captum_batched_best"]),
            f"<= {p['goals']['ours_over_captum_batched_best']}x"),
        row("same, H200", "Captum, one call per neuron (how peer tools use it)",
            s(pg["total_s"]["captum_per_neuron_s"], 3), s(pg["total_s"]["ours_guided_backprop_s"], 3),
            f"**{pg['ratios']['captum_per_neuron_over_ours']:.0f}x faster**", ">= 10x"),
        row("same, H200", "floor / Captum batched",
            f"{pg['total_s']['floor_best_s']:.3f} / {pg['total_s']['captum_batched_best_s']:.3f} s",
            s(pg["total_s"]["ours_guided_backprop_s"], 3),
            f"**{pg['ratios']['ours_over_floor']:.2f}x / {pg['ratios']['ours_over_captum_batched_best']:.2f}x**",
            f"<= {pg['goals']['ours_over_floor']}x / <= {pg['goals']['ours_over_captum_batched_best']}x"),
        row(f"`projection_fc.py`, CPU: guided backprop of {pf['config']['rows']} units each at AlexNet's fc6, fc7 "
            "and the classes (each row its own image and unit)", "floor: forward + one `autograd.grad`, no hooks",
            s(pf["total_s"]["floor"]), s(pf["total_s"]["ours"]), x(pf["ratios"]["ours_over_floor"]),
            f"<= {pf['goals']['ours_over_floor']}x"),
        row("same, CPU", "Captum `NeuronGuidedBackprop` (classes: `GuidedBackprop`), batched in the same chunks",
            s(pf["total_s"]["captum"]), s(pf["total_s"]["ours"]), x(pf["ratios"]["ours_over_captum"]),
            f"<= {pf['goals']['ours_over_captum']}x"),
        row(f"`feature_vis.py`, CPU: feature visualization of {fv['config']['maps']} maps of AlexNet's conv5, "
            f"{fv['config']['steps']} steps (random weights)", "Lucent 0.1.8's render_vis (ported), all maps in one batch",
            f"{fv['seconds_per_map']['lucent_batched']:.2f} s a map",
            f"{fv['seconds_per_map']['ours']:.2f} s a map with the redirected ReLU gradient "
            f"({fv['seconds_per_map']['ours_no_redirect']:.2f} s without it, "
            f"{fv['time_ours_no_redirect_over_lucent_batched']:.2f}x); objective: median over the maps of ours "
            f"less Lucent's {fv['median_ours_less_lucent_batched_objective']:+.3f}, Lucent's own noise "
            f"{fv['lucent_noise']:.3f}" + ("" if fv["objective_within_noise"] else " (not met)"),
            x(fv["time_ours_over_lucent_batched"])
            + ("" if fv["time_ours_over_lucent_batched"] <= fv["goals"]["time_ours_over_batched_at_most"] else " (not met)"),
            f"<= {fv['goals']['time_ours_over_batched_at_most']}x; objective >= Lucent's less its noise"),
        row("same, CPU", "Lucent 0.1.8's render_vis (ported), one map a call",
            f"{fv['seconds_per_map']['lucent_one_unit']:.2f} s a map",
            f"{fv['seconds_per_map']['ours']:.2f} s a map", f"**{fv['speedup_over_one_unit']:.2f}x faster**"
            + ("" if fv["speedup_over_one_unit"] >= fv["goals"]["speedup_over_one_unit_at_least"]
               else " (not met: 2 cores are busy at batch 1 already)"),
            f">= {fv['goals']['speedup_over_one_unit_at_least']}x faster"),
        row(f"`mining.py`, CPU: top-{m['config']['k']} of every map of conv1-conv5 over {n(m['config']['images'])} "
            "images", "bare `torch.no_grad()` forward to conv5", s(m["time_s"]["bare"]), s(m["time_s"]["ours"]),
            x(m["ours_over_bare_time"]), f"<= {m['goal_ours_over_bare_time']}x"),
        row(f"same, H200, {n(mg['config']['images'])} images", "bare forward", s(mg["time_s"]["bare"], 3),
            s(mg["time_s"]["ours"], 3), x(mg["ours_over_bare_time"]), f"<= {mg['goal_ours_over_bare_time']}x"),
        row(f"same, peak memory growth N vs 4N (CPU {n(256)}/{n(1024)}; H200 {n(2048)}/{n(8192)})", "bare forward",
            "flat", f"flat (CPU {mib(m_mem['256']['growth_bytes'])} / {mib(m_mem['1024']['growth_bytes'])}; H200 "
            f"{mib(mg_mem['2048']['growth_bytes'])} / {mib(mg_mem['8192']['growth_bytes'])})",
            x(m["memory_ratios"]["ours_4n_over_n"]), "flat in N"),
        row(f"`mining_fc.py`, CPU: every unit of AlexNet in one pass, conv1-conv5, fc6, fc7 and the classes, "
            f"top-{mf['config']['k']} over {n(mf['config']['images'])} images", "bare forward to the scores",
            s(mf["time_s"]["bare"]), s(mf["time_s"]["ours"]), x(mf["ours_over_bare_time"]), f"<= {mf['goal']}x"),
        row(f"`mining.py --net vgg16 --images {mv['config']['images']} --batch {mv['config']['batch']} --repeats 1`, "
            "CPU: VGG-16's five shown layers over 85 images (the mine stage's batch of Imagenette), random weights",
            "bare forward to `conv5_3` (`features[:29]`)",
            f"{s(mv['time_s']['bare'], 1)} ({mv['images_per_s']['bare']:.1f} img/s)",
            f"{s(mv['time_s']['ours'], 1)} ({mv['images_per_s']['ours']:.1f} img/s): "
            f"**about {mv['estimate_val_minutes']['ours']:.1f} minutes** for "
            f"Imagenette's {n(mv['estimate_val_minutes']['images'])} val images at that rate",
            x(mv["ours_over_bare_time"]), f"<= {mv['goal_ours_over_bare_time']}x"),
        row(f"same, peak memory growth N = {mv['config']['images']} vs 4N = {4 * mv['config']['images']} images",
            "bare forward", f"{mib(mv_mem['bare']['85']['growth_bytes'], 0)} / {mib(mv_mem['bare']['340']['growth_bytes'], 0)} "
            f"(a batch of {mv['config']['batch']} VGG-16 activations)",
            f"{mib(mv_mem['ours']['85']['growth_bytes'], 0)} / {mib(mv_mem['ours']['340']['growth_bytes'], 0)}",
            x(mv["memory_ratios"]["ours_4n_over_n"]), "flat in N"),
        row("`receptive_field.py`, CPU: `receptive_field` at 224 for one layer per stage of ResNet-18 (AlexNet: "
            "conv1, conv3, conv5)", "one plain batch-1 forward pass of the whole net",
            f"{rf['nets']['resnet18']['forward_s']:.3f} s (AlexNet {rf['nets']['alexnet']['forward_s']:.3f} s)",
            f"{min(rf_ours['resnet18']):.3f}-{max(rf_ours['resnet18']):.3f} s a call (AlexNet "
            f"{min(rf_ours['alexnet']):.3f}-{max(rf_ours['alexnet']):.3f} s): traced on the meta device, "
            "each conv's kernel read once for the input channels it is not zero on",
            f"**{min(rf_ratio['resnet18']):.2f}-{max(rf_ratio['resnet18']):.2f}x** (AlexNet "
            f"{min(rf_ratio['alexnet']):.2f}-{max(rf_ratio['alexnet']):.2f}x)", f"< {rf['goal_s']:.0f} s a call"),
        # Not in a JSON: the determinism run's verdict is in benchmarks/results/gpu_h200_log.txt.
        row("`determinism.py`, H200: two AlexNet trainings from one seed (float32)", "", "",
            "**bit-identical** (`gpu_h200_log.txt`)", "", ""),
        row(f"`imagenette_prepare.py`, CPU: decoding {prep['config']['images']} synthetic "
            f"{prep['config']['short_side']}-px JPEGs into {prep['config']['size']}x{prep['config']['size']} crops",
            "one worker", f"{n(prep['images_per_s']['workers_1'])} img/s",
            f"{n(prep['images_per_s']['workers_2'])} img/s on {prep['config']['workers_all']} cores",
            x(prep["speedup_all_cores_over_1"]), "use every core"),
        row(f"`scan.py`, CPU: scan@'s listing of a local folder (`folder_manifest`: path, size and mtime of "
            f"{n(sc['config']['files'])} one-byte files in {n(sc['config']['classes'])} class folders, page cache warm)",
            "`os.walk` + `os.stat` of every file", f"{n(sc['files_per_s']['bare'])} files/s",
            f"{n(sc['files_per_s']['manifest_first'])} files/s ({n(sc['files_per_s']['manifest_second'])} called again): "
            f"projected {sc['projected_imagenet']['seconds']:.0f} s for ImageNet's "
            f"{n(sc['projected_imagenet']['files'])} files; validate's `known_classes` "
            f"{sc['seconds']['known_classes'] * 1000:.0f} ms", f"{sc['ratio_manifest_first_over_bare']:.1f}x the time",
            "ImageNet in under a minute"),
        # Not in report.json: benchmarks/report.py prints these per-unit times (docs/report.md).
        row("`report.py`, CPU: a report's tiles of AlexNet units (18 a layer, all five methods, 48 px), random weights",
            "one `unit_pictures` call per method (six passes)", "0.048-0.266 s/unit",
            "0.041-0.207 s/unit (one call, four passes)", "**0.68x** the time", ""),
        row(f"`pretrained_load.py`, CPU: loading a VGG-16 state dict ({pre['file_bytes'] / 1e6:.0f} MB) with its sha256 "
            "checked, as every load of ImageNet weights does", "`torch.load` alone", s(pre["baseline_torch_load_s"]),
            f"{s(pre['load_pretrained_s'])} (the hash alone {s(pre['sha256_s'])}, {pre['sha256_mb_per_s']:.0f} MB/s)",
            f"{pre['ratio_load_pretrained_to_torch_load']:.2f}x the time", "one streamed read"),
    ]
    return table(("Benchmark", "Baseline", "Baseline figure", "Our figure", "Ratio", "Goal"), rows)


def training() -> str:
    t = load("training")["nets"]

    def cell(net, key):
        if f"{key}_images_per_s" not in net:
            return "(no tanh)"
        rate = net[f"{key}_images_per_s"]
        ratio = 1 / net[f"{key}_over_plain_time"]
        return f"{n(rate, 1 if rate < 100 else 0)} img/s ({ratio:.2f}x)"

    rows = []
    for name, title in (("lenet5", "LeNet-5"), ("alexnet", "AlexNet")):
        net = t[name]
        rate = net["plain_images_per_s"]
        rows.append(row(f"{title}, {n(net['images'])} images", f"{n(rate, 1 if rate < 100 else 0)} img/s",
                        f"**{cell(net, 'ours')}**", cell(net, "ours_nchw"), cell(net, "ours_reference_activation"),
                        cell(net, "ours_no_checkpoint"), cell(net, "ours_2_ranks")))
    return table(("Net", "plain loop", "ours", "ours in NCHW", "ours, reference scaled tanh",
                  "ours without the epoch checkpoint", "ours on 2 processes"), rows)


def costs() -> str:
    t, tg = load("training")["nets"], load("training_cuda")["nets"]
    prep, rep, mv = load("imagenette_prepare"), load("report"), load("mining_vgg16")
    epochs, images = 90, 9469          # AlexNet's default schedule; Imagenette's training images
    cpu_hours = epochs * images / t["alexnet"]["ours_images_per_s"] / 3600
    gpu_minutes = epochs * images / tg["alexnet"]["ours_no_checkpoint_images_per_s"] / 60
    rows = [
        # Measured by a dvc repro in a fresh clone (2026-12-05, 2-core AMD EPYC), not a benchmark.
        row("LeNet-5, 30 epochs on the 4,000-digit sample (the committed run)",
            "23 s, measured (`dvc repro -f -s train@lenet5` in a fresh clone, evaluations and start-up included)",
            ""),
        row("LeNet-5, 30 epochs on full MNIST", "about 8 minutes (15x the committed run's images at its rate)",
            "about 2.5 minutes"),
        row(f"AlexNet, {epochs} epochs on Imagenette (the default)",
            f"about {cpu_hours:.0f} hours of training steps "
            f"({t['alexnet']['ours_images_per_s']:.1f} img/s at batch {t['alexnet']['batch']}): not practical",
            f"about {gpu_minutes:.0f} minutes of training steps "
            f"({n(tg['alexnet']['ours_no_checkpoint_images_per_s'])} img/s), plus {epochs} evaluations of 3,925 val images"),
        row(f"Imagenette decode in prepare ({n(prep['estimate_real_archive']['images'])} JPEGs)",
            f"about {prep['estimate_real_archive']['seconds']['workers_2'] / 60:.1f} min after the download "
            f"({prep['per_image_ms']['workers_2']:.1f} ms per image on {prep['config']['workers_all']} cores)", ""),
        row(f"AlexNet's report, {n(rep['tiles_all_maps'] // rep['k'] // 6)} maps x {rep['k']} units x 5 methods",
            f"about {rep['estimate_total_s'] / 60:.0f} minutes ([The report](report.md#size-and-time))", "not measured"),
        row(f"VGG-16 mined over Imagenette's {n(mv['estimate_val_minutes']['images'])} val images (the heaviest CPU job)",
            f"about {mv['estimate_val_minutes']['ours']:.1f} minutes ({mv['images_per_s']['ours']:.1f} img/s in timed "
            f"batches of {mv['config']['batch']}), memory flat at about "
            f"{mv['memory']['ours']['85']['growth_bytes'] / 2 ** 30:.1f} GiB over the model", "not measured"),
    ]
    return table(("Run", "CPU (2 cores)", "GPU (H200)"), rows)


# ---------------------------------------------------------------- docs/reproducibility.md

def cpu_pin() -> str:
    c = load("cpu_pin")
    names = {"train_lenet5": f"train@lenet5, {c['settings']['lenet5_epochs']} epochs (whole stage)",
             "mine_lenet5": "mine@lenet5 (whole stage)",
             "mine_alexnet": f"AlexNet mining ({c['settings']['alexnet_images']} images, random weights)"}
    rows = [row(title, s(c[key]["pinned_s"]), s(c[key]["unpinned_s"]),
                f"**{c[key]['ratio_pinned_over_unpinned']:.2f}** ({c[key]['ratio_range'][0]:.2f}-"
                f"{c[key]['ratio_range'][1]:.2f})") for key, title in names.items()]
    return table(("work", "pinned", "unpinned", "pinned / unpinned (median of rounds, range)"), rows)


# ---------------------------------------------------------------- docs/feature-visualization.md: cost

def feature_vis_cost() -> str:
    c = load("feature_vis_cost")
    cfg = c["config"]
    rows = []
    for name, net in c["nets"].items():
        layers = net["layers"]
        per = [v["seconds_per_image_step"] for v in layers.values()]
        rows.append(row(f"`feature_vis_cost.py`, CPU ({c['machine']['logical_cpus']} cores): {net['title']}, "
                        f"{len(layers) - 1} shown layers and the classes", n(net["images"]),
                        f"{min(per):.3f}-{max(per):.3f} s", f"**~{net['estimated_hours']:.0f} h** (estimated)"))
    return table(("what (timed: {} steps of {} maps a layer, random weights)".format(cfg["timed_steps"], cfg["batch"]),
                  "images (maps, units, classes)", "per image-step, by layer",
                  f"whole net at {cfg['full_steps']} steps"), rows)


# ---------------------------------------------------------------- docs/feature-visualization.md: against Lucent

def feature_vis_lucent() -> str:
    fv = load("feature_vis")
    sec, mean = fv["seconds_per_map"], fv["mean_objective"]
    names = {"ours": "ours (engine.feature_vis, redirected ReLU gradient)",
             "ours_no_redirect": "ours without the redirected ReLU gradient (Lucent's recipe has none)",
             "lucent_batched": "Lucent 0.1.8's render_vis, all maps in one batch (as its README runs it)",
             "lucent_batched_frozen": "the same with the weights frozen (kinder to Lucent than Lucent is)",
             "lucent_one_unit": "Lucent 0.1.8's render_vis, one map a call"}
    spread = fv["seconds_per_map_rounds"]
    rows = [row(f"`feature_vis.py`: {title}", f"{s(sec[key])} ({min(spread[key]):.2f}-{max(spread[key]):.2f})",
                x(sec[key] / sec["ours"]), f"{mean[key]:.3f}")
            for key, title in names.items()]
    return table((f"AlexNet conv5, {fv['config']['maps']} maps x {fv['config']['steps']} steps, random weights, "
                  f"{fv['machine']['logical_cpus']} CPU cores", f"per map (median of {fv['config']['rounds']} rounds, "
                  "range)", "time / ours'", "mean objective over the maps"), rows)


def feature_vis_amp() -> str:
    a = load("feature_vis")["amp"]
    f64 = a["float64_reference"]

    def pct(v: float) -> str:
        return f"{100 * v:.2f} %"
    rows = [row("`feature_vis.py --amp`: bfloat16 autocast against float32 (" + a["note"].split(":")[0] + ")",
                pct(a["median_relative_change"]), pct(a["worst_relative_change"]),
                pct(a["mean_objective_relative_change"])),
            row("the floor: float32 against float64 (rounding alone)", pct(f64["median_float32_relative_change"]),
                pct(f64["worst_float32_relative_change"]), pct(f64["float32_mean_objective_relative_change"]))]
    return table(("objective change, AlexNet conv5, 8 maps x 64 steps", "median over the maps", "worst map",
                  "of the mean over the maps"), rows)


# ---------------------------------------------------------------- docs/feature-visualization.md: LeNet-5

PAPER_NAMES = {"conv1": "C1", "pool1": "S2", "conv2": "C3", "pool2": "S4", "conv3": "C5", "f6": "F6", "classes": ""}


def lenet5_visualize() -> str:
    layers = json.loads((ROOT / "metrics" / "lenet5_visualize.json").read_text())["layers"]
    rows = []
    for name in PAPER_NAMES:
        m = layers[name]
        won = round(m["beats_best_mined"] * m["maps"])
        share = f"{100 * m['beats_best_mined']:.0f} %" + (f" ({won})" if won not in (0, m["maps"]) else "")
        rows.append(row(f"{PAPER_NAMES[name]} `{name}`".strip() if name != "classes" else "classes", str(m["maps"]),
                        share, f"{m['median_gain']:.3g}"))
    return table(("layer (`metrics/lenet5_visualize.json`)", "maps", "beat the best digit", "median gain"), rows)


def lenet5_losers() -> str:
    r = load("lenet5_visualize")
    keys = [("committed", "the stage's image"), ("best_mined_committed", "best mined digit"),
            ("digit_shifted_1px", "that digit 1 px right and down"), ("blank", "blank page"),
            ("grey", "grey page (the start)"), ("no_transforms", "no transforms"), ("steps_2048", "2,048 steps"),
            ("steps_2048_no_transforms", "2,048 steps, no transforms")]
    rows = []
    for name, layer in r["layers"].items():
        for i, unit in enumerate(layer["units"]):
            what = f"{name} {unit}" + (" (a winner, for reference)" if unit == layer["reference"] else "")
            rows.append(row(what, *(f"{layer[key][i]:.3g}" for key, _ in keys)))
    return table(("`lenet5_visualize.py`: unit", *(title for _, title in keys)), rows)


TABLES = {"docs/benchmarks.md": {"speed": speed, "training": training, "costs": costs},
          "docs/reproducibility.md": {"cpu-pin": cpu_pin},
          "docs/feature-visualization.md": {"feature-vis-cost": feature_vis_cost, "feature-vis-lucent": feature_vis_lucent,
                                            "feature-vis-amp": feature_vis_amp, "lenet5-visualize": lenet5_visualize,
                                            "lenet5-losers": lenet5_losers}}


def render(text: str, tables: dict, page: str) -> str:
    for name, build in tables.items():
        begin, end = f"<!-- table:{name} -->", f"<!-- /table:{name} -->"
        if text.count(begin) != 1 or text.count(end) != 1:
            raise SystemExit(f"{page}: needs exactly one {begin} ... {end}")
        head, rest = text.split(begin)
        _, tail = rest.split(end)
        text = f"{head}{begin}\n{build()}\n{end}{tail}"
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a page's tables differ from the JSON")
    args = parser.parse_args(argv)
    stale = []
    for page, tables in TABLES.items():
        path = ROOT / page
        text = path.read_text()
        new = render(text, tables, page)
        if new != text:
            stale.append(page)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"stale tables in {', '.join(stale)}: run python benchmarks/tables.py", file=sys.stderr)
        return 1
    print(("up to date: " if not stale or args.check else "rewrote: ") + ", ".join(stale or TABLES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
