"""Step noise (gen/sampling/counter_normal.py, seeding.StepNoise): a function of (seed, image, step, element),
the same in any batch layout and on any device, and standard normal by the usual tests, which reject broken
generators."""
import numpy as np
import pytest
import scipy.stats
import torch

from gen.sampling.counter_normal import MASK32, image_keys, pcg_hash, step_normals
from gen.sampling.seeding import StepNoise, draw_batch

pytestmark = pytest.mark.usefixtures("one_thread")
LIKE = torch.empty(16, 4, 8, 8)


def steps_of(sampler, like, steps=3):
    return [sampler(like) for _ in range(steps)]


def real_normals(seed, images, step, count):
    return step_normals(image_keys(seed, images), step, count)


# -- layout independence ------------------------------------------------------------------------------------------
def test_an_image_gets_the_same_noise_in_a_batch_of_16_in_batches_of_3_or_alone():
    whole = torch.stack(steps_of(StepNoise(7, range(16)), LIKE))  # [step, image, ...]
    for size in (3, 1):
        parts = [torch.stack(steps_of(StepNoise(7, range(start, min(start + size, 16))), LIKE[start:start + size]))
                 for start in range(0, 16, size)]
        assert torch.equal(torch.cat(parts, dim=1), whole), f"batches of {size}"


def test_images_in_any_order_keep_their_noise():
    order = [5, 0, 11, 3]
    shuffled = StepNoise(7, order)(LIKE[:4])
    assert torch.equal(shuffled, StepNoise(7, range(16))(LIKE)[order])


def test_draw_batch_gives_the_step_noise_of_its_seed_and_images():
    _, _, noise_sampler = draw_batch(3, [4, 9], (4, 8), num_classes=10)
    assert torch.equal(noise_sampler(LIKE[:2]), StepNoise(3, [4, 9])(LIKE[:2]))


def test_a_batch_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="a batch of 3 for the step noise of 16 images"):
        StepNoise(0, range(16))(LIKE[:3])


# -- distinct -----------------------------------------------------------------------------------------------------
def test_seeds_images_steps_and_elements_give_different_values():
    base = real_normals(0, torch.arange(4), 0, 4096)
    others = {"seed": real_normals(1, torch.arange(4), 0, 4096),
              "seed's high word": real_normals(1 << 32, torch.arange(4), 0, 4096),
              "image": real_normals(0, torch.arange(4) + 4, 0, 4096),
              "step": real_normals(0, torch.arange(4), 1, 4096)}
    for what, values in others.items():
        assert (values == base).float().mean() < 1e-3, f"another {what} repeats the values"
    assert all(len(torch.unique(row)) == 4096 for row in base), "an element repeats another of its image"


def shared_values_per_image_pair(values: torch.Tensor) -> int:
    """The most values any two images (rows) have in common: a few by chance, thousands for a shared stream."""
    flat, rows = values.flatten().numpy(), np.repeat(np.arange(len(values)), values.shape[1])
    order = np.argsort(flat, kind="stable")
    same = np.flatnonzero(flat[order][1:] == flat[order][:-1])
    pairs = np.sort(np.stack([rows[order][same], rows[order][same + 1]], axis=1), axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return int(np.unique(pairs, axis=0, return_counts=True)[1].max()) if len(pairs) else 0


def shifted_stream_normals(seed, images, step, count):
    """Broken on purpose: the counter added to an unhashed key, so image i + 1 replays image i one word later."""
    words = pcg_hash((images[:, None] * 2 + step + torch.arange(2 * count)) & MASK32)
    uniform = (words.double() + 0.5) / 2.0 ** 32
    return torch.tensor(scipy.stats.norm.ppf(uniform[:, 0::2].numpy()), dtype=torch.float32)


def unmixed_normals(seed, images, step, count):
    """Broken on purpose: Box-Muller on a Weyl sequence (words a constant apart), no hash to mix them."""
    words = (images[:, None] * 977 + step * 131 + torch.arange(2 * count) * 2654435769) & MASK32
    radius = torch.sqrt(-2 * torch.log((words[:, 0::2].double() + 0.5) / 2.0 ** 32))
    return (radius * torch.cos(words[:, 1::2].double() / 2.0 ** 32 * 2 * torch.pi)).float()


def test_no_two_images_share_a_stream():
    assert shared_values_per_image_pair(real_normals(0, torch.arange(512), 0, 1024)) <= 3
    assert shared_values_per_image_pair(shifted_stream_normals(0, torch.arange(512), 0, 1024)) > 100


# -- statistics: ~1e6 values of 64 images x 4 steps x 4096 elements -----------------------------------------------
def defects(normals_fn) -> list:
    """The standard-normal checks that `normals_fn(seed, images, step, count)` fails. Bounds are 5 standard
    errors of the sample size (about 1 in 2 million false alarms each); the draw is fixed, so it is stable."""
    z = torch.stack([normals_fn(0, torch.arange(64), step, 4096) for step in range(4)]).double()  # [step, image, e]
    size = z.numel()
    found = []
    if abs(z.mean()) > 5 / size ** 0.5:
        found.append(f"mean {float(z.mean()):.2e}")
    if abs(z.var() - 1) > 5 * (2 / size) ** 0.5:
        found.append(f"variance {float(z.var()):.4f}")
    if scipy.stats.kstest(z.flatten().numpy(), "norm").pvalue < 1e-3:
        found.append("Kolmogorov-Smirnov against N(0, 1)")
    for name, dim in (("elements", 2), ("images", 1), ("steps", 0)):
        for power in (1, 2):  # squares: a dependence that leaves the plain correlation at 0
            a, b = z.narrow(dim, 0, z.shape[dim] - 1) ** power, z.narrow(dim, 1, z.shape[dim] - 1) ** power
            correlation = float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])
            if abs(correlation) > 5 / a.numel() ** 0.5:
                found.append(f"adjacent {name}{' (squares)' if power == 2 else ''}: correlation {correlation:.4f}")
    return found


def test_the_step_noise_passes_the_standard_normal_checks():
    assert defects(real_normals) == []


@pytest.mark.parametrize("broken, expected", [
    (lambda seed, images, step, count: real_normals(seed, images, 0, count), "adjacent steps"),
    (lambda seed, images, step, count: real_normals(seed, images * 0, step, count), "adjacent images"),
    (lambda seed, images, step, count: real_normals(seed, images, step, count).repeat_interleave(2, 1)[:, :count],
     "adjacent elements"),
    (lambda seed, images, step, count: real_normals(seed, images, step, count).clamp(-2, 2), "variance"),
    (lambda seed, images, step, count: (torch.rand(len(images), count, generator=torch.Generator().manual_seed(step))
                                        - 0.5) * 12 ** 0.5, "Kolmogorov-Smirnov"),
    (unmixed_normals, "adjacent elements"),
], ids=["ignores the step", "ignores the image", "repeats elements", "clipped tails", "uniform", "no hash"])
def test_the_checks_reject_a_broken_generator(broken, expected):
    assert any(expected in defect for defect in defects(broken))


# -- dtype and device ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_the_noise_has_the_dtype_and_shape_of_like(dtype):
    noise = StepNoise(0, range(16))(LIKE.to(dtype))
    assert noise.dtype == dtype and noise.shape == LIKE.shape and noise.device == LIKE.device
    reference = StepNoise(0, range(16))(LIKE)
    torch.testing.assert_close(noise.float(), reference, rtol=0, atol=1e-5 if dtype != torch.bfloat16 else 0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_gives_the_cpu_values():
    cpu, cuda = StepNoise(5, range(256)), StepNoise(5, range(256))
    for _ in range(3):
        like = torch.empty(256, 4, 32, 32)
        on_device = cuda(like.cuda())
        assert on_device.device.type == "cuda"
        torch.testing.assert_close(on_device.cpu(), cpu(like), rtol=0, atol=1e-5)


# -- in a sampler -------------------------------------------------------------------------------------------------
def test_ddpm_driven_by_the_step_noise_reproduces_a_gaussian_mixture():
    """tests/test_samplers_gmm.py's DDPM check with StepNoise in place of torch.randn: 250 steps of 4000 images."""
    from gmm import assert_matches_mixture, three_blobs
    from test_samplers_gmm import NUM_SAMPLES, exact_eps_model, starting_noise

    from gen.diffusion import create_diffusion

    mixture, diffusion = three_blobs(), create_diffusion("250", learn_sigma=False)
    noise_sampler = StepNoise(0, range(NUM_SAMPLES))
    samples = diffusion.p_sample_loop(exact_eps_model(mixture), (NUM_SAMPLES, 2), noise=starting_noise(),
                                      clip_denoised=False, noise_fn=noise_sampler)
    assert noise_sampler.step == 250 and samples.dtype == starting_noise().dtype
    assert_matches_mixture(samples, mixture)
