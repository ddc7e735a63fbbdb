"""DCGAN networks: shapes at both resolutions; the sub-pixel transposed conv equals flax's."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import models
from jaxvision.models import dcgan


@pytest.mark.parametrize(
  "generator_name, discriminator_name, shape",
  [
    ("dcgan_generator", "dcgan_discriminator", (28, 28, 1)),
    ("dcgan_generator_cifar", "dcgan_discriminator_cifar", (32, 32, 3)),
  ],
)
def test_shapes_and_ranges(generator_name, discriminator_name, shape):
  # as the GAN trainer builds them: the image shape comes from the data
  generator = models.create_model(models.model_config(generator_name), output_shape=shape)
  discriminator = models.create_model(models.model_config(discriminator_name))
  z = jax.random.normal(jax.random.key(0), (3, 100))
  g_vars = generator.init(jax.random.key(1), z, train=False)
  images = generator.apply(g_vars, z, train=False)
  assert images.shape == (3, *shape)
  assert float(jnp.abs(images).max()) <= 1.0
  d_vars = discriminator.init(jax.random.key(2), images, train=False)
  assert discriminator.apply(d_vars, images, train=False).shape == (3,)
  assert "batch_stats" in g_vars and "batch_stats" in d_vars


def test_generator_rejects_indivisible_output():
  with pytest.raises(ValueError, match="not divisible"):
    dcgan.Generator(output_shape=(30, 30, 1)).init(
      jax.random.key(0), jnp.zeros((1, 8)), train=False
    )


@pytest.mark.parametrize(
  "size, kernel, stride, padding",
  [
    ((7, 7), 4, 2, "SAME"),
    ((7, 7), 5, 2, "SAME"),
    ((4, 5), 3, 2, "SAME"),
    ((6, 5), 4, 2, "VALID"),
    ((4, 4), 3, 3, "SAME"),
  ],
)
def test_subpixel_conv_transpose_equals_flax(size, kernel, stride, padding):
  """Same parameters, outputs and gradients as nn.ConvTranspose (float32 tolerance)."""
  x = jax.random.normal(jax.random.key(0), (2, *size, 6))
  reference = nn.ConvTranspose(5, (kernel, kernel), strides=(stride, stride), padding=padding)
  variables = reference.init(jax.random.key(1), x)
  ours = dcgan.ConvTranspose(5, (kernel, kernel), (stride, stride), padding, impl="subpixel")
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == jax.tree.map(
    jnp.shape, variables
  )
  np.testing.assert_allclose(
    ours.apply(variables, x), reference.apply(variables, x), rtol=1e-5, atol=1e-5
  )
  weights = jax.random.normal(jax.random.key(2), reference.apply(variables, x).shape)

  def grads(module):
    loss = lambda v, x: jnp.sum(module.apply(v, x) * weights)
    return jax.grad(loss, argnums=(0, 1))(variables, x)

  for a, b in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(reference)), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_auto_impl_is_subpixel_on_cpu_only():
  assert dcgan.resolve_conv_transpose_impl("auto") == (
    "subpixel" if jax.default_backend() == "cpu" else "xla"
  )
  with pytest.raises(ValueError, match="unknown conv_transpose_impl"):
    dcgan.resolve_conv_transpose_impl("fft")
