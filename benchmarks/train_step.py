"""Images/s and peak memory of a full DiT training step: forward, loss, backward, AdamW, EMA.

    python benchmarks/train_step.py                  # DiT-S/2 vs DiT-S/2-VCA at 256 and 512 px, 1 and 2 threads
    python benchmarks/train_step.py --official /tmp/DiT   # adds the official DiT code's DiT-S/2 (needs timm)
    python benchmarks/train_step.py --with-xl        # adds DiT-XL/2 (and its VCA twin) and MFU, on a GPU

The step is the one gen/training/loop.py runs (ADM diffusion loss with learned sigma, AdamW at lr 1e-4, the
foreach EMA), in bf16 autocast with fused AdamW on a GPU and fp32 on the CPU (--cpu-bf16: autocast there
too). Ratios are against the MHSA model at the same size: the steps run interleaved (A, B, A, B, ...) and
the ratio is the median of the per-round ratios, so load on a shared machine cancels. --official DIR takes
a clone of github.com/facebookresearch/DiT, kept outside this repository, and times its DiT-S/2 with its own
diffusion loss and EMA beside ours (after checking that both networks give the same output). Model FLOP
utilisation = 3 x forward FLOPs per image x images/s over the device's dense bf16 peak (--peak-tflops,
known for H100/H200/A100).
"""
import argparse
import copy
import datetime
import itertools
import os
import statistics
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import device_name, median_ratio, paired_seconds, peak_memory_bytes, print_table  # noqa: E402

from gen.diffusion import create_diffusion  # noqa: E402
from gen.models import create_model, load_official_state_dict  # noqa: E402
from gen.training import DiffusionLoss  # noqa: E402
from gen.training.ema import create_ema, update_ema  # noqa: E402

OFFICIAL = "official DiT-S/2"
DENSE_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def forward_flops_per_image(name: str, input_size: int) -> int:
    """Forward FLOPs of one image, counted on the meta device with attention decomposed into matmuls."""
    with torch.device("meta"):
        model = create_model(name, input_size=input_size)
        x, t, y = torch.randn(1, 4, input_size, input_size), torch.zeros(1, dtype=torch.long), torch.zeros(1).long()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, t, y)
    return counter.get_total_flops()


def build_step(name, input_size, batch, device, dtype, compile_model):
    torch.manual_seed(0)
    model = create_model(name, input_size=input_size).to(device).train()
    ema = create_ema(model)
    fused = device.type in ("cuda", "cpu")  # as the training loop
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0, fused=fused)
    loss_fn = DiffusionLoss(create_diffusion(""))  # the loss train_dit.py uses
    forward = torch.compile(model) if compile_model else model
    x = torch.randn(batch, 4, input_size, input_size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = loss_fn(forward, x, y).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        update_ema(ema, model)

    return step


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


def measure_pair(names, image_size, batch, device, dtype, args) -> dict:
    """{name: (seconds, ratio to the first name, peak bytes, forward FLOPs per image)}, timed interleaved."""
    steps = {name: build_step(name, image_size // 8, batch, device, dtype, args.compile) for name in names}
    if args.official and device.type == "cpu" and names[0] == "DiT-S/2":
        steps[OFFICIAL] = build_official_step(args.official, image_size // 8, batch)
    times = paired_seconds(steps, device, warmup=2 if args.compile else 1, rounds=args.rounds)
    base = times[names[0]]
    ratios = {name: median_ratio(times[name], base) for name in names}
    if OFFICIAL in times:
        ratios[OFFICIAL] = median_ratio(base, times[OFFICIAL])  # ours / official, the goal's way round
    return {name: (statistics.median(times[name]), ratios[name],
                   peak_memory_bytes(step, device) if args.memory else 0,
                   forward_flops_per_image("DiT-S/2" if name == OFFICIAL else name, image_size // 8))
            for name, step in steps.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batch-size", type=int, default=None, help="per step (default 64 GPU, 4 CPU)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU threads, each in turn")
    parser.add_argument("--with-xl", action="store_true", help="also DiT-XL/2 and DiT-XL/2-VCA")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
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
    batch = args.batch_size or (64 if device.type == "cuda" else 4)
    peak = peak_tflops(device, args.peak_tflops)
    sizes = ["S"] + (["XL"] if args.with_xl else [])
    for threads in args.threads if device.type == "cpu" else [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        print(f"device: {device_name(device)}; dtype {str(dtype).split('.')[-1]}; torch {torch.__version__}; "
              f"{datetime.date.today()}; batch {batch}; compile {args.compile}; {args.rounds} paired rounds")
        rows, official_rows = [], []
        for size, image_size in itertools.product(sizes, args.image_sizes):
            base = f"DiT-{size}/2"
            for name, (seconds, ratio, memory, flops) in measure_pair(
                    [base, f"{base}-VCA"], image_size, batch, device, dtype, args).items():
                if name == OFFICIAL:
                    official_rows.append([name, image_size, f"{batch / seconds:.2f}", f"{ratio:.3f}"])
                    continue
                mfu = f"{100 * 3 * flops * batch / seconds / (peak * 1e12):.1f} %" if peak else "-"
                rows.append([name, image_size, f"{batch / seconds:.2f}", f"{ratio:.3f}",
                             f"{memory / 2**20:.0f}", f"{flops / 1e9:.1f}", mfu])
        print_table(f"Training step (forward, loss, backward, AdamW, EMA), {threads} threads",
                    ["model", "px", "images/s", "step time / MHSA", "peak MiB",
                     "fwd GFLOP/img", "MFU"], rows)
        if official_rows:
            print_table(f"The official DiT code's step, {threads} threads", ["model", "px", "images/s",
                        "our DiT-S/2 / official"], official_rows)


if __name__ == "__main__":
    main()
