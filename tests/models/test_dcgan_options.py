"""DCGAN options: defaults unchanged, pmap batch norm, spectral norm, conditioning, dropout."""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.models import dcgan


class ReferenceGenerator(nn.Module):
  """The generator as it was before the options (frozen copy): the defaults must equal it."""

  output_shape: Sequence[int] = (28, 28, 1)
  features: Sequence[int] = (256, 128)
  kernel_size: int = 4
  batch_norm: bool = True
  conv_transpose_impl: str = "auto"

  @nn.compact
  def __call__(self, z, *, train: bool):
    h, w, c = self.output_shape
    scale = 2 ** len(self.features)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
    act = lambda x: nn.relu(norm()(x)) if self.batch_norm else nn.relu(x)
    x = nn.Dense(h // scale * w // scale * self.features[0], use_bias=not self.batch_norm)(z)
    x = act(x.reshape(z.shape[0], h // scale, w // scale, self.features[0]))
    k = (self.kernel_size, self.kernel_size)
    for width in self.features[1:]:
      x = dcgan.ConvTranspose(
        width, k, use_bias=not self.batch_norm, impl=self.conv_transpose_impl
      )(x)
      x = act(x)
    x = dcgan.ConvTranspose(c, k, impl=self.conv_transpose_impl)(x)
    return jnp.tanh(x)


class ReferenceDiscriminator(nn.Module):
  """The discriminator as it was before the options (frozen copy)."""

  features: Sequence[int] = (64, 128)
  kernel_size: int = 4
  batch_norm: bool = True

  @nn.compact
  def __call__(self, x, *, train: bool):
    for i, width in enumerate(self.features):
      use_norm = self.batch_norm and i > 0
      x = nn.Conv(width, (self.kernel_size,) * 2, strides=2, padding="SAME", use_bias=not use_norm)(
        x
      )
      if use_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
      x = nn.leaky_relu(x, 0.2)
    return nn.Dense(1)(x.reshape(x.shape[0], -1))[:, 0]


Z = jax.random.normal(jax.random.key(0), (4, 16))
X = jax.random.uniform(jax.random.key(1), (4, 8, 8, 1), minval=-1, maxval=1)  # small: fast
LABELS = jnp.array([0, 3, 7, 9])
G_SMALL = functools.partial(dcgan.Generator, output_shape=(8, 8, 1), features=(32, 16))


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
  "ours, reference, inputs",
  [
    (G_SMALL(), ReferenceGenerator(output_shape=(8, 8, 1), features=(32, 16)), Z),
    (dcgan.Discriminator(features=(8, 16)), ReferenceDiscriminator(features=(8, 16)), X),
  ],
)
def test_defaults_keep_parameters_and_outputs(ours, reference, inputs):
  variables = reference.init(jax.random.key(2), inputs, train=False)
  assert_trees_equal(ours.init(jax.random.key(2), inputs, train=False), variables)
  assert_trees_equal(
    ours.apply(variables, inputs, train=False), reference.apply(variables, inputs, train=False)
  )
  train = lambda m: m.apply(variables, inputs, train=True, mutable=["batch_stats"])
  assert_trees_equal(train(ours), train(reference))


def test_axis_name_averages_batch_statistics_across_pmap_devices():
  n = 2  # of the 8 virtual CPU devices: enough to show the cross-device mean, faster
  x = (
    jax.random.normal(jax.random.key(3), (2 * n, 8, 8, 1)) * jnp.arange(2 * n)[:, None, None, None]
  )
  model = dcgan.Discriminator(features=(8, 16))
  variables = model.init(jax.random.key(4), x, train=False)
  logits, stats = model.apply(variables, x, train=True, mutable=["batch_stats"])

  def sharded(axis_name):
    def shard_step(variables, x):
      return dcgan.Discriminator(features=(8, 16), axis_name=axis_name).apply(
        variables, x, train=True, mutable=["batch_stats"]
      )

    replicated = jax.tree.map(lambda v: jnp.stack([v] * n), variables)
    return jax.pmap(shard_step, axis_name="batch", devices=jax.devices()[:n])(
      replicated, x.reshape(n, 2, *x.shape[1:])
    )

  p_logits, p_stats = sharded("batch")
  # the statistics (and so the logits) of the whole batch, the same on every device
  np.testing.assert_allclose(p_logits.reshape(-1), logits, rtol=1e-4, atol=1e-5)
  for a, b in zip(jax.tree.leaves(p_stats), jax.tree.leaves(stats), strict=True):
    np.testing.assert_allclose(a, np.broadcast_to(b, a.shape), rtol=1e-4, atol=1e-5)
  # without the axis name each device normalises with its own shard's statistics
  assert not np.allclose(sharded(None)[0].reshape(-1), logits, rtol=1e-3, atol=1e-3)


def test_spectral_norm_divides_each_weight_by_its_largest_singular_value():
  model = dcgan.Discriminator(features=(8, 16), batch_norm=False, spectral_norm=True)
  plain = dcgan.Discriminator(features=(8, 16), batch_norm=False)
  variables = model.init(jax.random.key(5), X, train=False)
  # same parameters as without spectral norm; its state is in the batch-norm collection
  assert jax.tree.map(jnp.shape, variables["params"]) == jax.tree.map(
    jnp.shape, plain.init(jax.random.key(5), X, train=False)["params"]
  )
  assert set(variables) == {"params", dcgan.SPECTRAL_NORM_COLLECTION}

  @jax.jit
  def train_pass(stats):
    _, updates = model.apply(
      {"params": variables["params"], "batch_stats": stats}, X, train=True, mutable=["batch_stats"]
    )
    return updates["batch_stats"]

  stats = variables["batch_stats"]
  for _ in range(100):  # one power iteration per training pass
    stats = train_pass(stats)
  sn_stats = stats["SpectralNorm_0"] | stats["SpectralNorm_1"] | stats["SpectralNorm_2"]
  for layer in ("Conv_0", "Conv_1", "Dense_0"):
    kernel = np.asarray(variables["params"][layer]["kernel"])
    effective = kernel.reshape(-1, kernel.shape[-1]) / sn_stats[f"{layer}/kernel/sigma"]
    assert abs(np.linalg.svd(effective, compute_uv=False)[0] - 1.0) < 0.05, layer
  # evaluation uses, but does not update, the power-iteration state
  full = {"params": variables["params"], "batch_stats": stats}
  out, updates = model.apply(full, X, train=False, mutable=["batch_stats"])
  assert_trees_equal(updates["batch_stats"], stats)
  assert not np.allclose(out, plain.apply({"params": variables["params"]}, X, train=False))


def test_conditional_generator_uses_labels():
  model = G_SMALL(num_classes=10)
  variables = model.init(jax.random.key(6), Z, LABELS, train=False)
  out = model.apply(variables, Z, LABELS, train=False)
  assert out.shape == (4, 8, 8, 1)
  other = model.apply(variables, Z, (LABELS + 1) % 10, train=False)
  assert float(jnp.abs(out - other).min()) > 0  # every image changes with its label
  with pytest.raises(ValueError, match="pass labels"):
    model.apply(variables, Z, train=False)
  with pytest.raises(ValueError, match="unconditional"):
    G_SMALL().init(jax.random.key(6), Z, LABELS, train=False)


def test_projection_discriminator():
  model = dcgan.Discriminator(features=(8, 16), num_classes=10)
  variables = model.init(jax.random.key(7), X, LABELS, train=False)
  logits = model.apply(variables, X, LABELS, train=False)
  assert logits.shape == (4,)
  assert not np.allclose(logits, model.apply(variables, X, (LABELS + 1) % 10, train=False))
  with pytest.raises(ValueError, match="pass labels"):
    model.apply(variables, X, train=False)

  params = variables["params"]
  embedding = params["Embed_0"]["embedding"]  # [K, D]
  w, b = params["Dense_0"]["kernel"][:, 0], params["Dense_0"]["bias"][0]  # psi = w . phi + b

  def logits_with(embedding):
    new = {**variables, "params": {**params, "Embed_0": {"embedding": embedding}}}
    return model.apply(new, X, LABELS, train=False)

  # a zero embedding leaves psi(phi(x)): the unconditional discriminator with the same weights
  psi = logits_with(jnp.zeros_like(embedding))
  unconditional = {**variables, "params": {k: v for k, v in params.items() if k != "Embed_0"}}
  np.testing.assert_allclose(
    psi, dcgan.Discriminator(features=(8, 16)).apply(unconditional, X, train=False), rtol=1e-6
  )
  # every class embedded as w: logit = psi + <w, phi> = psi + (psi - b)
  np.testing.assert_allclose(
    logits_with(jnp.broadcast_to(w, embedding.shape)), 2 * psi - b, rtol=1e-5, atol=1e-5
  )


def test_dropout_is_random_in_training_only():
  model = dcgan.Discriminator(features=(8, 16), dropout_rate=0.5)
  variables = model.init(jax.random.key(8), X, train=False)
  plain = dcgan.Discriminator(features=(8, 16)).init(jax.random.key(8), X, train=False)
  assert_trees_equal(variables, plain)  # dropout has no parameters
  assert_trees_equal(
    model.apply(variables, X, train=False),
    dcgan.Discriminator(features=(8, 16)).apply(variables, X, train=False),
  )

  def train(key):
    out, _ = model.apply(
      variables, X, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(key)}
    )
    return out

  np.testing.assert_array_equal(train(1), train(1))
  assert not np.allclose(train(1), train(2))


def test_a_class_head_adds_class_logits_and_leaves_the_real_fake_logits():
  model = dcgan.Discriminator(features=(8, 16), num_classes=10, class_head=True)
  variables = model.init(jax.random.key(9), X, LABELS, train=False)
  logits, class_logits = model.apply(variables, X, LABELS, train=False)
  assert logits.shape == (4,) and class_logits.shape == (4, 10)
  params = variables["params"]
  without = {**variables, "params": {k: v for k, v in params.items() if k != "class_head"}}
  plain = dcgan.Discriminator(features=(8, 16), num_classes=10)
  np.testing.assert_array_equal(logits, plain.apply(without, X, LABELS, train=False))
  phi = params["class_head"]["kernel"]  # [D, K]: the head is a dense layer on the features
  assert phi.shape[1] == 10
  with pytest.raises(ValueError, match="needs num_classes > 0"):
    dcgan.Discriminator(features=(8, 16), class_head=True).init(jax.random.key(9), X, train=False)
