"""Speed of the networks: a meta-training step (E + G + D with the real losses, K = 8) and G rendering an
avatar's frames (constant AdaIN parameters ψ), per preset, batch size and variant; prints JSON.

Variants (each a lever on top of the one before; "fp32-eager-reference" is the plain fp32 eager baseline
every speed-up is measured against, in the same run):
  fp32-eager-reference   fp32, contiguous, eager, the plain formulation of every op (models.blocks
                         .use_reference_ops: F.instance_norm, conv then avg-pool, upsample then conv,
                         attention on unpadded q, k), spectral norm computed per call
  fp32-eager             the fast ops of models.blocks (fused instance norm/AdaIN, stride-2 resampling
                         convs, padded flash attention)
  fp32-channels-last     + channels_last weights and activations
  prepared               render only: metahead.perf.prepare_generator_for_inference (spectral norm folded
                         into the weights, stride-2 kernels computed once, channels_last, ψ a constant)
  *-compiled             + torch.compile (the first call, compile included, is reported separately)
  *-bf16                 + bf16 autocast (fp32 master weights); skipped on CPUs without native bf16
                         (AMX / AVX512-BF16), where one case shows how slow emulated bf16 is

Every case runs in a fresh subprocess (its own peak RSS; on CUDA torch.cuda.max_memory_allocated). Each
figure comes with its FLOPs (torch.utils.flop_counter, counted on the warm-up call): "flops" are the
plain formulation's (the network's nominal work, the same for every variant), "flops_executed" what the
variant ran. "fraction_of_peak" is executed FLOPs / time / the matching dtype's peak measured in the same run
(hardware utilisation); "effective_fraction_of_peak" uses the nominal FLOPs (so fused ops can exceed 1).

    python benchmarks/bench_networks.py                 # cpu-64, cpu-128, paper-256 (< 10 min on 2 cores)
    python benchmarks/bench_networks.py --quick         # cpu-64 and cpu-128, fewer repeats
    python benchmarks/bench_networks.py --compile       # + torch.compile at cpu-64 (slow to compile)
    python benchmarks/bench_networks.py --device cuda   # a GPU: bf16, compiled, batch 8 (unmeasured here)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
from metahead import perf  # noqa: E402
from metahead.config import preset  # noqa: E402

SHOTS = 8  # K
NUM_VIDEOS = 64  # rows of W (the lookup's cost at 150k videos: bench_w_lookup.py)

RENDER_VARIANTS: dict[str, dict[str, Any]] = {
    "fp32-eager-reference": {"reference_ops": True},
    "fp32-eager": {},
    "fp32-channels-last": {"channels_last": True},
    "prepared": {"prepared": True},
    "prepared-compiled": {"prepared": True, "compile": True},
    "prepared-bf16": {"prepared": True, "amp": "bf16"},
    "prepared-bf16-compiled": {"prepared": True, "amp": "bf16", "compile": True},
}
TRAIN_VARIANTS: dict[str, dict[str, Any]] = {
    "fp32-eager-reference": {"reference_ops": True},
    "fp32-eager": {},
    "fp32-channels-last": {"channels_last": True},
    "fp32-channels-last-compiled": {"channels_last": True, "compile": True},
    "bf16-channels-last": {"channels_last": True, "amp": "bf16"},
    "bf16-channels-last-compiled": {"channels_last": True, "amp": "bf16", "compile": True},
}
BASELINE = "fp32-eager-reference"
# The variant whose FLOPs a compiled variant borrows (FlopCounterMode does not see inside compiled graphs).
EAGER_TWIN = {
    "prepared-compiled": "prepared",
    "prepared-bf16-compiled": "prepared-bf16",
    "fp32-channels-last-compiled": "fp32-channels-last",
    "bf16-channels-last-compiled": "bf16-channels-last",
}
GOALS = {  # issue 14, at paper-256 on the 2-core CPU
    "train_step_k8_batch1_s": 1.8,
    "render_batch8_ms_per_frame": 80.0,
    "render_batch1_ms_per_frame": 120.0,
    "render_fraction_of_bf16_peak": 0.40,
}


# --- one case (runs in a child process) ---------------------------------------------------------------------


def random_images(batch: int, size: int, device: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)


def render_case(case: dict[str, Any]) -> dict[str, Any]:
    from metahead.models import Generator
    from metahead.models.blocks import use_reference_ops

    cfg, device, batch = preset(case["preset"]).model, case["device"], case["batch"]
    opts = RENDER_VARIANTS[case["variant"]]
    generator = Generator(cfg).to(device).eval().requires_grad_(False)
    with torch.no_grad():
        psi = generator.project(torch.randn(1, cfg.embedding_dim, device=device))  # ψ, computed once
    landmark_images = random_images(batch, cfg.image_size, device, seed=1)
    if opts.get("reference_ops"):
        use_reference_ops(generator)
    if opts.get("prepared"):
        net = perf.prepare_generator_for_inference(generator, psi, channels_last=True)
        landmark_images = perf.channels_last_input(landmark_images)

        def call():
            return net(landmark_images)
    else:
        net = generator
        if opts.get("channels_last"):
            perf.to_channels_last(net)
            landmark_images = perf.channels_last_input(landmark_images)

        def call():
            return net(landmark_images, adain_params=psi)

    autocast = perf.autocast_context(opts.get("amp", "none"), device)
    result: dict[str, Any] = {"setup_peak_memory_mb": common.peak_memory_mb(device)}
    common.reset_peak_memory(device)
    with torch.inference_mode(), autocast:
        if opts.get("compile"):
            perf.maybe_compile(net, True)
            start = time.perf_counter()
            call()
            common.synchronize(device)
            result["first_call_s"] = time.perf_counter() - start  # compilation included
            result["compiled"] = perf.is_compiled(net)
        else:
            result["flops_executed"], _ = common.count_flops(call)  # also the warm-up
        result["timing"] = common.time_call(
            call, warmup=0 if "flops_executed" in result else 1, repeats=case["repeats"], device=device
        )
    result["peak_memory_mb"] = common.peak_memory_mb(device)
    return result


def train_case(case: dict[str, Any]) -> dict[str, Any]:
    from metahead.landmarks.mean_face import random_faces
    from metahead.losses import ContentLoss
    from metahead.models import Discriminator, Embedder, Generator
    from metahead.models.blocks import use_reference_ops
    from metahead.training.meta import (
        Episode,
        discriminator_losses,
        generator_losses,
        video_embedding_match_loss,
    )

    exp = preset(case["preset"])
    cfg, loss_cfg, tc = exp.model, exp.loss, exp.train
    device, batch, size = case["device"], case["batch"], exp.model.image_size
    opts = TRAIN_VARIANTS[case["variant"]]
    memory_format = torch.channels_last if opts.get("channels_last") else torch.contiguous_format
    embedder = Embedder(cfg).to(device, memory_format=memory_format)  # E
    generator = Generator(cfg).to(device, memory_format=memory_format)  # G with P
    discriminator = Discriminator(cfg, NUM_VIDEOS).to(device, memory_format=memory_format)  # D with W, w0, b
    content_loss = ContentLoss(  # the offline loss, whatever the preset: no weight files on this machine
        dataclasses.replace(loss_cfg, vgg19_weights_path=None, vggface_weights_path=None, allow_offline=True)
    )
    content_loss.to(device)
    if opts.get("reference_ops"):
        for net in (embedder, generator, discriminator):
            use_reference_ops(net)
    if opts.get("compile"):
        for net in (embedder, generator, discriminator):
            perf.maybe_compile(net, True)
    optimizer_generator = torch.optim.Adam(
        [*embedder.parameters(), *generator.parameters()], lr=tc.lr_generator, betas=tc.adam_betas
    )
    optimizer_discriminator = torch.optim.Adam(
        discriminator.parameters(), lr=tc.lr_discriminator, betas=tc.adam_betas
    )
    # An episode batch as data/episodes.py gives it: K frames to embed + 1 target per video.
    images = random_images(batch * (SHOTS + 1), size, device, seed=1).view(batch, SHOTS + 1, 3, size, size)
    landmark_images = random_images(batch * (SHOTS + 1), size, device, seed=2).view_as(images)
    episode = Episode(
        shot_images=images[:, :-1],
        shot_landmark_images=landmark_images[:, :-1],
        target_image=images[:, -1].contiguous(memory_format=memory_format),
        target_landmark_image=landmark_images[:, -1].contiguous(memory_format=memory_format),
        target_landmarks=torch.as_tensor(random_faces(batch, size), dtype=torch.float32, device=device),
        video_index=torch.arange(batch, device=device) % NUM_VIDEOS,
    )
    autocast = perf.autocast_context(opts.get("amp", "none"), device)

    def step() -> None:
        # training/meta.py's losses. E, G, P: L_CNT + L_ADV + L_MCH (the FT model)
        generator_step = generator_losses(
            embedder, generator, discriminator, content_loss, loss_cfg, episode, autocast, finetunable=True
        )
        optimizer_generator.zero_grad(set_to_none=True)
        generator_step.total.backward()
        optimizer_generator.step()
        # D: L_DSC on [real; fake] in one pass, + L_MCH's pull on W_i
        loss_d = discriminator_losses(discriminator, episode, generator_step.fake_image, autocast).total
        loss_d = loss_d + loss_cfg.match_weight * video_embedding_match_loss(
            discriminator, generator_step.frame_embeddings, episode.video_index
        )
        optimizer_discriminator.zero_grad(set_to_none=True)
        loss_d.backward()
        optimizer_discriminator.step()

    result: dict[str, Any] = {
        "setup_peak_memory_mb": common.peak_memory_mb(device),
        "content_loss": content_loss.description,
    }
    common.reset_peak_memory(device)
    if opts.get("compile"):
        start = time.perf_counter()
        step()
        common.synchronize(device)
        result["first_call_s"] = time.perf_counter() - start
        result["compiled"] = all(perf.is_compiled(n) for n in (embedder, generator, discriminator))
    else:
        result["flops_executed"], _ = common.count_flops(step)  # also the warm-up
    result["timing"] = common.time_call(step, warmup=0, repeats=case["repeats"], device=device)
    result["peak_memory_mb"] = common.peak_memory_mb(device)
    return result


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(case["threads"])
    torch.manual_seed(0)
    if case["what"] == "peak":
        return {
            "peak": common.machine_peak(case["device"], tuple(case["dtypes"])),
            "runtime": {**perf.allocator_in_use(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "")},
        }
    if case["what"] == "render":
        return render_case(case)
    return train_case(case)


# --- the plan and the report (parent process) ---------------------------------------------------------------


def plan(args: argparse.Namespace, bf16_native: bool) -> list[dict[str, Any]]:
    """The cases of this run, most important first, so that a run cut short by its budget keeps them: at
    every preset the baseline and the best variant (render batch 1 and 8, a training step at batch 1), then
    the single levers, larger training batches, compiled and 1-thread cases."""
    cuda = args.device.startswith("cuda")
    presets = args.presets or (["cpu-64", "cpu-128"] if args.quick else ["cpu-64", "cpu-128", "paper-256"])
    all_threads = perf.available_cores() if not cuda else 1
    threads = args.threads or all_threads
    best_render = "prepared-bf16" if (cuda or bf16_native) else "prepared"
    best_train = "bf16-channels-last" if (cuda or bf16_native) else "fp32-channels-last"
    first: list[dict[str, Any]] = []
    later: list[dict[str, Any]] = []

    def add(to: list, what: str, name: str, variant: str, batch: int, n_threads: int = threads) -> None:
        big = name == "paper-256"
        repeats = 2 if args.quick else (3 if big else 5)
        if big and (batch > 1 or variant == BASELINE):
            repeats = 2  # a paper-256 reference step takes a minute on 2 cores
        to.append({
            "what": what, "preset": name, "variant": variant, "batch": batch, "repeats": repeats,
            "threads": n_threads, "device": args.device,
        })  # fmt: skip

    for name in presets:
        for batch in (1, 8):
            for variant in dict.fromkeys([BASELINE, "prepared", best_render]):
                add(first, "render", name, variant, batch)
        for variant in dict.fromkeys([BASELINE, "fp32-channels-last", best_train]):
            add(first, "train", name, variant, 1)
    for name in presets:
        big = name == "paper-256"
        if not big:  # each lever alone, measured where it is cheap
            for batch in (1, 8):
                for variant in ("fp32-eager", "fp32-channels-last"):
                    add(later, "render", name, variant, batch)
            add(later, "train", name, "fp32-eager", 1)
        for batch in [8] if cuda else ([] if big else [4]):
            for variant in dict.fromkeys([BASELINE, best_train]):
                add(later, "train", name, variant, batch)
        if name == "cpu-64" and not (cuda or bf16_native):
            add(later, "render", name, "prepared-bf16", 1)  # evidence of emulated bf16's cost
        if args.compile and (cuda or name == "cpu-64" or args.compile_all):
            add(later, "render", name, best_render + "-compiled", 1)
            add(later, "train", name, best_train + "-compiled", 1)
    if not cuda and all_threads > 1 and not args.threads and not args.quick:
        # Thread scaling on a shared machine: baseline and best at one thread.
        big = presets[-1]
        for variant in (BASELINE, "prepared"):
            add(later, "render", big, variant, 1, 1)
        for variant in (BASELINE, "fp32-channels-last"):
            add(later, "train", presets[0], variant, 1, 1)
    return first + later


def case_key(case: dict[str, Any], variant: str | None = None) -> tuple:
    return (case["what"], case["preset"], variant or case["variant"], case["batch"], case["threads"])


def summarise(results: list[dict[str, Any]], peaks: dict[int, dict[str, Any]]) -> None:
    """Fill FLOPs, fractions of peak and speed-ups over the baseline into every result, in place."""
    by_key = {case_key(r): r for r in results if "timing" in r}
    for r in results:
        if "timing" not in r:
            continue
        seconds = r["timing"]["median_s"]
        twin = by_key.get(case_key(r, EAGER_TWIN.get(r["variant"], r["variant"])))
        if "flops_executed" not in r and twin is not None and "flops_executed" in twin:
            r["flops_executed"] = twin["flops_executed"]
        base = by_key.get(case_key(r, BASELINE))
        r["flops"] = (base or r).get("flops_executed", r.get("flops_executed"))
        dtype = "bf16" if "bf16" in r["variant"] else "fp32"
        peak = peaks.get(r["threads"])
        executed = r.get("flops_executed")
        if peak and executed:
            # hardware utilisation: the FLOPs the variant ran; "effective": the network's nominal FLOPs
            r["achieved_flop_per_s"] = executed / seconds
            r["fraction_of_peak"] = common.fraction_of_peak(executed, seconds, peak, dtype)
            r["effective_fraction_of_peak"] = common.fraction_of_peak(r["flops"], seconds, peak, dtype)
            r["peak_dtype"] = dtype
            if "bf16" in peak:
                r["fraction_of_bf16_peak"] = common.fraction_of_peak(executed, seconds, peak, "bf16")
            # the best this machine does in any dtype (bf16 with AMX; fp32 where bf16 is emulated)
            best = max(peak[d]["peak_flop_per_s"] for d in common.PEAK_DTYPES if d in peak)
            r["fraction_of_machine_peak"] = executed / seconds / best
            if r["threads"] == 1:  # CPU time: what the process ran, not what it waited for others
                cpu_seconds = r["timing"]["cpu_median_s"]
                r["cpu_time_fraction_of_peak"] = common.fraction_of_peak(executed, cpu_seconds, peak, dtype)
        if base is not None:
            r["speedup_vs_fp32_eager_reference"] = base["timing"]["median_s"] / seconds
            if r["threads"] == 1:
                r["cpu_time_speedup_vs_fp32_eager_reference"] = (
                    base["timing"]["cpu_median_s"] / r["timing"]["cpu_median_s"]
                )
        if r["what"] == "render":
            r["ms_per_frame"] = 1000 * seconds / r["batch"]
            r["frames_per_s"] = r["batch"] / seconds
        else:
            r["step_s"] = seconds
            r["images_per_s"] = r["batch"] * (SHOTS + 1) / seconds  # K embedded + 1 generated per episode


def goals(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's paper-256 goals against the best variant measured in this run (all cores)."""

    def best(what: str, batch: int) -> dict[str, Any] | None:
        rows = [r for r in results if r.get("what") == what and r.get("preset") == "paper-256"
                and r.get("batch") == batch and "timing" in r]  # fmt: skip
        if not rows:
            return None
        top = max(r["threads"] for r in rows)
        return min((r for r in rows if r["threads"] == top), key=lambda r: r["timing"]["median_s"])

    out: dict[str, Any] = {"targets": GOALS}
    train = best("train", 1)
    if train:
        met = train["step_s"] <= GOALS["train_step_k8_batch1_s"]
        out["train_step_k8_batch1_s"] = {"value": train["step_s"], "variant": train["variant"], "met": met}
    for batch in (1, 8):
        r = best("render", batch)
        if r:
            key = f"render_batch{batch}_ms_per_frame"
            out[key] = {
                "value": r["ms_per_frame"],
                "variant": r["variant"],
                "met": r["ms_per_frame"] <= GOALS[key],
            }
            if batch == 8:
                # the machine has AMX, where bf16 is the machine's peak; elsewhere take the best dtype
                fraction = r.get("fraction_of_machine_peak")
                out["render_fraction_of_bf16_peak"] = {
                    "value": fraction, "variant": r["variant"], "of": "the best peak of any dtype",
                    "met": fraction is not None and fraction >= GOALS["render_fraction_of_bf16_peak"],
                }  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--presets", nargs="+", help="default: cpu-64 cpu-128 paper-256 (--quick: the first two)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: all cores, plus 1-thread runs)"
    )
    parser.add_argument("--quick", action="store_true", help="small presets, fewer repeats")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also torch.compile cases at cpu-64 (minutes of compiling on CPU)",
    )
    parser.add_argument("--compile-all", action="store_true", help="torch.compile cases at every preset")
    parser.add_argument("--budget-s", type=float, default=540.0, help="stop starting cases after this long")
    parser.add_argument("--case-timeout-s", type=float, default=600.0)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print its JSON
    args = parser.parse_args()
    if args.case:
        case = json.loads(args.case)
        print(json.dumps({**case, **run_case(case)}))
        return
    args.compile = args.compile or args.compile_all or args.device.startswith("cuda")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")

    started = time.perf_counter()
    env = common.tuned_env()
    bf16_native = perf.native_bf16(args.device)
    cases = plan(args, bf16_native)

    def child(case: dict[str, Any]) -> dict[str, Any]:
        child_env = {**env, "OMP_NUM_THREADS": str(case["threads"])}
        argv = [sys.executable, __file__, "--case", json.dumps(case)]
        out, meta = common.run_json_subprocess(argv, timeout=args.case_timeout_s, env=child_env)
        if not isinstance(out, dict):
            return {**case, "error": meta.get("note", "no output"), "subprocess": meta}
        return {**out, "subprocess_s": meta["seconds"]}

    peaks: dict[int, dict[str, Any]] = {}
    runtime: dict[str, Any] = {}
    for n in sorted({c["threads"] for c in cases}):
        out = child({"what": "peak", "threads": n, "device": args.device, "dtypes": ["fp32", "bf16"],
                     "preset": "-", "variant": "-", "batch": 0, "repeats": 0})  # fmt: skip
        if "peak" in out:
            peaks[n] = out["peak"]
            runtime = out["runtime"]
    results = []
    for case in cases:
        if time.perf_counter() - started > args.budget_s:
            results.append({**case, "skipped": f"run budget of {args.budget_s:.0f} s spent"})
            continue
        results.append(child(case))
        figure = results[-1].get("timing", {}).get("median_s", results[-1].get("error"))
        name = " ".join(str(case[k]) for k in ("what", "preset", "variant", "batch", "threads"))
        print(f"# {name}: {figure}", file=sys.stderr)
    summarise(results, peaks)
    report = {
        "benchmark": "networks",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        **common.machine_info(args.device),
        "allocator": runtime,  # what the cases ran with (this process's own allocator does not matter)
        "load_average_after": common.load_average(),
        "seconds": round(time.perf_counter() - started, 1),
        "shots_K": SHOTS,
        "peaks": peaks,
        "goals_paper_256": goals(results),
        "notes": []
        if bf16_native or args.device.startswith("cuda")
        else [
            "this CPU has no native bf16 (no AMX / AVX512-BF16): bf16 runs emulated, see peaks; the bf16 "
            "network variants are skipped except one cpu-64 render case"
        ],
        "results": results,
    }
    text = json.dumps(common.rounded(report), indent=1)
    if args.out:
        from metahead.fileio import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
