"""Counter-based standard normals: value = f(seed, image, step, element), computed where the tensor lives.

Construction. A 32-bit integer hash, the PCG hash of Jarzynski & Olano 2020 ("Hash Functions for GPU
Rendering", JCGT 9(3)): one LCG step, then PCG's random-shift xorshift and a multiply. It is their
recommended 1-D hash (the best TestU01 quality for its cost in their comparison), a bijection on 32 bits (distinct
inputs to one round stay distinct), and its multipliers fit int64 products; Philox, the usual counter-based
generator, needs 32 x 32 -> 64-bit products, which overflow signed int64. Keys are chained in the paper's nested
form, pcg(x + pcg(y)):

    image_key = pcg(image + pcg(seed_high + pcg(seed_low)))     once per batch, a [B] tensor
    step_key  = pcg(step + image_key)                           once per step, [B]
    word(c)   = pcg(step_key + pcg(c))                          c = 0, 1, 2, ...: one round over [B, 2P]

The counter is hashed before it meets the key (not pcg(key + c)): with key + c, two images whose keys differ
by d < 2P would share one stream shifted by d elements (256 latents of 4 x 32 x 32: about 1 step in 16).
A pair (u1, u2) repeats only if both its words do, so chance repeats of 32-bit words leave no pattern.
Words 2m and 2m + 1 make pair m: u1 = (word + 1/2) / 2^32 in (0, 1] (1 only by float32 rounding, giving
radius 0; never 0, so the log is finite: |z| <= 6.8), u2 = top 24 bits / 2^24 in [0, 1), and Box-Muller
gives elements 2m (r cos) and 2m + 1 (r sin). The integers live in int64 tensors with every product below
2^63 (multipliers below 2^30, masked to 32 bits after each step), so there is no signed overflow and CPU and
CUDA compute the same words; the normals then agree up to the rounding of log, sqrt, cos and sin.
"""
import math

import torch

MASK32 = 0xFFFFFFFF


def pcg_hash(x: torch.Tensor) -> torch.Tensor:
    """PCG hash of 32-bit words held in int64 (Jarzynski & Olano 2020, listing `pcg`)."""
    state = (x * 747796405 + 2891336453) & MASK32
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) & MASK32
    return (word >> 22) ^ word


def image_keys(seed: int, images: torch.Tensor) -> torch.Tensor:
    """The key of each image of `seed` (int64 [B]); a seed of any size counts by its low 64 bits."""
    seed &= (1 << 64) - 1
    seed_low = pcg_hash(torch.full_like(images, seed & MASK32))
    seed_key = pcg_hash((seed_low + (seed >> 32)) & MASK32)
    return pcg_hash((seed_key + (images & MASK32)) & MASK32)


def step_normals(keys: torch.Tensor, step: int, count: int, dtype=torch.float32) -> torch.Tensor:
    """[B, count] standard normals of `step` for the images of `keys` (from image_keys), on keys' device."""
    step_key = pcg_hash((keys + (step & MASK32)) & MASK32)
    pairs = (count + 1) // 2
    counters = pcg_hash(torch.arange(2 * pairs, device=keys.device, dtype=torch.int64))
    words = pcg_hash((step_key[:, None] + counters) & MASK32)
    radius_words, angle_words = words[:, 0::2], words[:, 1::2]
    uniform = (radius_words.to(dtype) + 0.5) * 2.0 ** -32  # never 0: the log below stays finite
    radius = torch.sqrt(-2.0 * torch.log(uniform))
    angle = (angle_words >> 8).to(dtype) * (2.0 * math.pi * 2.0 ** -24)  # 24 bits: exact in float32
    normals = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)
    return normals.flatten(1)[:, :count]
