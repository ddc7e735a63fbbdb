"""DiffAugment (Zhao et al. 2020): differentiable augmentations for data-efficient GAN training.

With few real images the discriminator memorises them and the generator stops learning.
DiffAugment applies the same random, differentiable transformation family T to *both* what the
discriminator sees from the data and what it sees from the generator, in the discriminator's
update and in the generator's: D(T(x)) and D(T(G(z))). Because T is differentiable, the
generator's gradient flows back through it; because fakes are augmented too, the generator is
not rewarded for producing augmented-looking images (augmenting only the reals leaks the
augmentations into the samples).

Trainer contract: call `diff_augment` with THE SAME policy on the real and on the fake batch,
each with its own key (the paper's code draws fresh randomness per call), e.g.
`real_key, fake_key = jax.random.split(jax.random.fold_in(aug_key, step))`.

Ported from the authors' PyTorch reference (mit-han-lab/data-efficient-gans, DiffAugment_pytorch):
images NHWC in [-1, 1]; all randomness per image.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

TRANSLATION_RATIO = 0.125  # shift by up to 1/8 of the side, both ways
CUTOUT_RATIO = 0.5  # a square with half the side


def _brightness(key, x):
  """Adds one offset in [-0.5, 0.5) per image."""
  return x + (jax.random.uniform(key, (x.shape[0], 1, 1, 1), x.dtype) - 0.5)


def _saturation(key, x):
  """Scales each pixel's deviation from its channel mean by a factor in [0, 2) per image."""
  mean = jnp.mean(x, axis=3, keepdims=True)  # [B, H, W, 1]
  return (x - mean) * (jax.random.uniform(key, (x.shape[0], 1, 1, 1), x.dtype) * 2) + mean


def _contrast(key, x):
  """Scales each image's deviation from its mean by a factor in [0.5, 1.5)."""
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)  # [B, 1, 1, 1]
  return (x - mean) * (jax.random.uniform(key, (x.shape[0], 1, 1, 1), x.dtype) + 0.5) + mean


def _translation(key, x):
  """Shifts each image by integers in [-s, s] on each axis (s = 1/8 of the side), zero-filled.

  A gather from the zero-padded image (out[i, j] = padded[i + dy + 1, j + dx + 1], indices
  clipped to the padding), so gradients reach every input pixel that is still in the frame.
  """
  b, h, w, _ = x.shape
  sh, sw = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
  ky, kx = jax.random.split(key)
  dy = jax.random.randint(ky, (b,), -sh, sh + 1)
  dx = jax.random.randint(kx, (b,), -sw, sw + 1)
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # [B, H + 2, W + 2, C]

  def shift(image, dy, dx):
    rows = jnp.clip(jnp.arange(h) + dy + 1, 0, h + 1)
    cols = jnp.clip(jnp.arange(w) + dx + 1, 0, w + 1)
    return image[rows][:, cols]  # [H, W, C]

  return jax.vmap(shift)(padded, dy, dx)


def _cutout(key, x):
  """Zeroes one square of half the side per image, centred anywhere (clipped at the border)."""
  b, h, w, _ = x.shape
  ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
  ky, kx = jax.random.split(key)
  # Centres as in the reference: 0..H (0..H-1 for odd sizes), the square spans centre - size//2.
  cy = jax.random.randint(ky, (b, 1), 0, h + (1 - ch % 2))
  cx = jax.random.randint(kx, (b, 1), 0, w + (1 - cw % 2))
  ys, xs = jnp.arange(h)[None], jnp.arange(w)[None]  # [1, H], [1, W]
  in_y = (ys >= cy - ch // 2) & (ys < cy - ch // 2 + ch)  # [B, H]
  in_x = (xs >= cx - cw // 2) & (xs < cx - cw // 2 + cw)  # [B, W]
  keep = ~(in_y[:, :, None] & in_x[:, None, :])  # [B, H, W]
  return x * keep[..., None].astype(x.dtype)


AUGMENTATIONS = {
  "color": (_brightness, _saturation, _contrast),
  "translation": (_translation,),
  "cutout": (_cutout,),
}


def diff_augment(key: jax.Array, x: jax.Array, policy: str = "translation,cutout") -> jax.Array:
  """Applies the policy's augmentations, in the policy's order, with randomness per image.

  Args:
    key: PRNG key; the output is a pure function of (key, x).
    x: images [B, H, W, C], in [-1, 1] for the colour ranges to mean what the paper meant.
    policy: comma-separated names from `AUGMENTATIONS` ("color", "translation", "cutout");
      "" is the identity. The paper's choices: "translation,cutout" for small data, adding
      "color" for CIFAR-scale images.

  Returns:
    Augmented images [B, H, W, C], differentiable with respect to x.
  """
  names = [p.strip() for p in policy.split(",") if p.strip()]
  unknown = [p for p in names if p not in AUGMENTATIONS]
  if unknown:
    raise ValueError(f"unknown DiffAugment policy {unknown}; known: {sorted(AUGMENTATIONS)}")
  i = 0
  for name in names:
    for fn in AUGMENTATIONS[name]:
      x = fn(jax.random.fold_in(key, i), x)  # a key per transformation: no reuse
      i += 1
  return x
