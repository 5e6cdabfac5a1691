"""Images/s and peak memory of a full DiT training step: forward, loss, backward, AdamW, EMA.

    python benchmarks/train_step.py                  # DiT-S/2 vs DiT-S/2-VCA at 256 and 512 px, 1 and 2 threads
    python benchmarks/train_step.py --official /tmp/DiT   # adds the official DiT code's DiT-S/2 (needs timm)
    python benchmarks/train_step.py --with-xl        # adds DiT-XL/2 (and its VCA twin) and MFU, on a GPU
    python benchmarks/train_step.py --modes eager compiled --vca-kernels auto torch   # rows for each

The step is the one gen/training/loop.py runs (ADM diffusion loss with learned sigma, AdamW at lr 1e-4, the
foreach EMA), in bf16 autocast with fused AdamW on a GPU and fp32 on the CPU (--cpu-bf16: autocast there
too). Ratios are against the MHSA model at the same size: the steps run interleaved (A, B, A, B, ...) and
the ratio is the median of the per-round ratios, so load on a shared machine cancels. --official DIR takes
a clone of github.com/facebookresearch/DiT, kept outside this repository, and times its DiT-S/2 with its own
diffusion loss and EMA beside ours (after checking that both networks give the same output). Model FLOP
utilisation = 3 x forward FLOPs per image x images/s over the device's dense bf16 peak (--peak-tflops,
known for H100/H200/A100).

A table is never lost: on a GPU the batch is chosen per model and size (a token budget: DiT-S/2 256 images
at 256 px, 64 at 512; DiT-XL/2 64 and 16) and halved on out-of-memory, the batch used said in the row; one
pair (the MHSA model and its VCA twin, whose kernel choices share one model) is resident at a time; each row
is printed as it is measured; a row that fails says why in one line and the run goes on.
"""
import argparse
import copy
import datetime
import functools
import itertools
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import (  # noqa: E402
    StreamTable,
    device_name,
    is_out_of_memory,
    measure_rows,
    median_ratio,
    one_line,
    paired_seconds,
    peak_memory_bytes,
)

from gen.diffusion import create_diffusion  # noqa: E402
from gen.models import create_model, load_official_state_dict, model_config, set_vca_kernels  # noqa: E402
from gen.models.flops import forward_flops_per_image  # noqa: E402
from gen.models.vca import KERNELS  # noqa: E402
from gen.models.zoo import NAME_PATTERN  # noqa: E402
from gen.training import DiffusionLoss  # noqa: E402
from gen.training.ema import create_ema, update_ema  # noqa: E402

OFFICIAL = "official DiT-S/2"
# Tokens per step on one 80 GB GPU with a pair resident: DiT-S/2 256 images at 256 px, DiT-XL/2 64 (16 at 512 px).
GPU_TOKENS_PER_STEP = {"Mini": 65536, "S": 65536, "B": 32768, "L": 16384, "XL": 16384}
DENSE_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def forward_flops_of(name: str, input_size: int) -> int:
    """Forward FLOPs of one image of `name` at an ImageNet latent size (gen.models.flops counts them)."""
    return forward_flops_per_image(model_config(name, input_size=input_size))


def default_batch(name: str, image_size: int, device: torch.device) -> int:
    """Images per step: 4 on the CPU; on a GPU a token budget per model size (DiT-S/2: 256 at 256 px, 64 at 512)."""
    if device.type != "cuda":
        return 4
    size = NAME_PATTERN.match(name).group(2)
    tokens = (image_size // 8 // model_config(name).patch_size) ** 2
    return max(1, min(512, GPU_TOKENS_PER_STEP[size] // tokens))


def build_training(name, input_size, batch, device, dtype, compile_backend=None):
    """(model, step): one training step as gen/training/loop.py runs it, its inputs and optimiser state made."""
    torch.manual_seed(0)
    model = create_model(name, input_size=input_size).to(device).train()
    ema = create_ema(model)
    fused = device.type in ("cuda", "cpu")  # as the training loop
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0, fused=fused)
    loss_fn = DiffusionLoss(create_diffusion(""))  # the loss train_dit.py uses
    forward = torch.compile(model, backend=compile_backend) if compile_backend not in (None, False, "none") else model
    x = torch.randn(batch, 4, input_size, input_size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = loss_fn(forward, x, y).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        update_ema(ema, model)

    return model, step


def build_step(name, input_size, batch, device, dtype, compile_backend=None, kernels=None):
    """The training step of a fresh model `name`; `kernels` picks VCA's kernels (see set_vca_kernels)."""
    model, step = build_training(name, input_size, batch, device, dtype, compile_backend)
    if kernels:
        set_vca_kernels(model, kernels)
    return step


def with_kernels(model, step, kernels):
    """`step` with VCA's kernels switched to `kernels` first: the VCA rows of a pair share one model."""
    def switched():
        set_vca_kernels(model, kernels)
        step()
    return switched


def build_official_step(dit_dir, input_size, batch):
    """The official DiT code's DiT-S/2 step on the CPU: its network, diffusion loss and EMA loop; our AdamW."""
    sys.path.insert(0, dit_dir)
    import models as official_models  # noqa: PLC0415 - from the clone, not from this repository
    from diffusion import create_diffusion as official_diffusion  # noqa: PLC0415
    from train import update_ema as official_update_ema  # noqa: PLC0415

    torch.manual_seed(0)
    model = official_models.DiT_models["DiT-S/2"](input_size=input_size, num_classes=1000).train()
    _check_same_network(model, input_size)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
    diffusion = official_diffusion(timestep_respacing="")
    x, y = torch.randn(batch, 4, input_size, input_size), torch.randint(0, 1000, (batch,))

    def step():
        t = torch.randint(0, diffusion.num_timesteps, (batch,))
        loss = diffusion.training_losses(model, x, t, dict(y=y))["loss"].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        official_update_ema(ema, model)

    return step


@torch.no_grad()
def _check_same_network(official, input_size):
    """Ours, holding the official weights, must give the official output: the timing compares one network."""
    for block in official.blocks:  # nonzero adaLN-Zero weights, so the blocks take part
        torch.nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.02)
    ours = load_official_state_dict(create_model("DiT-S/2", input_size=input_size), official.state_dict()).eval()
    official.eval()
    x, t, y = torch.randn(2, 4, input_size, input_size), torch.tensor([10, 900]), torch.tensor([1, 2])
    expected = official(x, t, y)
    error = float((ours(x, t, y) - expected).abs().max() / expected.abs().max())
    official.train()
    if error > 1e-5:
        raise RuntimeError(f"our DiT-S/2 differs from the official one by {error:.1e} (relative)")


def peak_tflops(device, override):
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops for key, tflops in DENSE_BF16_TFLOPS.items() if key in name), None)


def pair_keys(base, device, args) -> list[tuple[str, str]]:
    """The (model, kernels) rows of one pair: the MHSA model, its VCA twin per kernel choice, the official code."""
    keys = [(base, "-"), *((f"{base}-VCA", kernels) for kernels in args.vca_kernels)]
    return keys + [(OFFICIAL, "-")] if args.official and device.type == "cpu" and base == "DiT-S/2" else keys


def pair_steps(base, input_size, batch, device, dtype, backend, args) -> dict:
    """{(model, kernels): step}: the VCA rows share one model, so only one pair is resident at a time."""
    steps = {(base, "-"): build_step(base, input_size, batch, device, dtype, backend)}
    vca_model, vca_step = build_training(f"{base}-VCA", input_size, batch, device, dtype, backend)
    for kernels in args.vca_kernels:
        steps[(f"{base}-VCA", kernels)] = with_kernels(vca_model, vca_step, kernels)
    if (OFFICIAL, "-") in pair_keys(base, device, args):
        steps[(OFFICIAL, "-")] = build_official_step(args.official, input_size, batch)
    return steps


def measure_pair(base, image_size, batch, device, dtype, backend, args) -> dict:
    """{(model, kernels): (seconds, step time / MHSA's, peak bytes) or why it failed}, timed interleaved."""
    steps = pair_steps(base, image_size // 8, batch, device, dtype, backend, args)
    results = {}
    for key, step in list(steps.items()):  # one untimed run each (compiles): a failing step leaves the pair
        try:
            step()
        except Exception as error:
            if is_out_of_memory(error):
                raise
            results[key] = one_line(error)
            del steps[key]
    times = paired_seconds(steps, device, warmup=1 if backend else 0, rounds=args.rounds)
    baseline = times.get((base, "-"))
    for key, step in steps.items():
        ratio = median_ratio(times[key], baseline) if baseline else None
        results[key] = (statistics.median(times[key]), ratio, peak_memory_bytes(step, device) if args.memory else None)
    return results


@functools.cache
def flops_or_none(name: str, input_size: int):
    try:
        return forward_flops_of(name, input_size)
    except Exception:  # a model the counter cannot trace still gets its time
        return None


def pair_rows(table, base, image_size, backend, device, dtype, peak, args):
    """Measure one pair and print its rows; a failure is said in its rows and the run goes on."""
    batch, results, note = measure_rows(lambda size: measure_pair(base, image_size, size, device, dtype, backend, args),
                                        pair_keys(base, device, args),
                                        args.batch_size or default_batch(base, image_size, device), device)
    step = {None: "eager", "none": "compile skipped"}.get(backend, f"compiled ({backend})")
    for name, kernels in pair_keys(base, device, args):
        known = [name, kernels, image_size, batch, step]
        result = results[name, kernels]
        if isinstance(result, str):
            table.failed(known, "; ".join(filter(None, [result, note])))
            continue
        seconds, ratio, memory = result
        flops = flops_or_none("DiT-S/2" if name == OFFICIAL else name, image_size // 8)
        mfu = f"{100 * 3 * flops * batch / seconds / (peak * 1e12):.1f} %" if peak and flops else "-"
        official = f"the official code; ours / official {1 / ratio:.3f}" if name == OFFICIAL and ratio else ""
        table.row([*known, f"{batch / seconds:.2f}", f"{ratio:.3f}" if ratio else "-",
                   f"{memory / 2**20:.0f}" if memory is not None else "-",
                   f"{flops / 1e9:.1f}" if flops else "-", mfu, "; ".join(filter(None, [official, note]))])


def mhsa_model(name: str) -> str:
    """An MHSA model name of the zoo (its VCA twin is measured beside it): a wrong one fails at parsing."""
    try:
        attention = model_config(name).attention
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if attention != "mhsa":
        raise argparse.ArgumentTypeError(f"expected an MHSA model such as DiT-S/2 or DiT-XL/2, got {name!r}")
    return name


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=mhsa_model, nargs="+", default=["DiT-S/2"],
                        help="MHSA models, each timed beside its VCA twin")
    parser.add_argument("--with-xl", action="store_true", help="also DiT-XL/2 and DiT-XL/2-VCA")
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batch-size", type=int, default=None,
                        help="per step (default 4 on the CPU; on a GPU by model and size, halved on out-of-memory)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU threads, each in turn")
    parser.add_argument("--modes", nargs="+", choices=["eager", "compiled"], default=["eager"],
                        help="eager and/or torch.compile'd steps, each its own rows")
    parser.add_argument("--compile", dest="modes", action="store_const", const=["compiled"],
                        help="the same as --modes compiled")
    parser.add_argument("--compile-backend", default="inductor",
                        help='torch.compile backend of compiled rows ("none": they run eager and say so)')
    parser.add_argument("--vca-kernels", nargs="+", choices=KERNELS, default=["auto"],
                        help="a VCA row for each kernel choice, all against the MHSA model of the same pair")
    parser.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on the CPU as well")
    parser.add_argument("--official", metavar="DIR", help="a clone of facebookresearch/DiT to time beside ours")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory pass")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the device")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" or args.cpu_bf16 else torch.float32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    peak = peak_tflops(device, args.peak_tflops)
    models = args.models + (["DiT-XL/2"] if args.with_xl and "DiT-XL/2" not in args.models else [])
    for threads in args.threads if device.type == "cpu" else [None]:
        if threads:
            torch.set_num_threads(threads)
        print(f"device: {device_name(device)}; dtype {str(dtype).split('.')[-1]}; torch {torch.__version__}; "
              f"{datetime.date.today()}; {args.rounds} paired rounds", flush=True)
        table = StreamTable("Training step (forward, loss, backward, AdamW, EMA)"
                            + (f", {threads} threads" if threads else ""),
                            ["model", "VCA kernels", "px", "batch", "step", "images/s", "step time / MHSA",
                             "peak MiB", "fwd GFLOP/img", "MFU", "note"], {"model": 16, "step": 19})
        for mode, base, image_size in itertools.product(args.modes, models, args.image_sizes):
            backend = args.compile_backend if mode == "compiled" else None
            pair_rows(table, base, image_size, backend, device, dtype, peak, args)


if __name__ == "__main__":
    main()
