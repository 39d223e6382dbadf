"""The optimizer: global-norm gradient clipping, then Adam or SGD (optax)."""

import optax

OPTIMIZERS = {"adam": optax.adam, "sgd": optax.sgd}


def make_optimizer(learning_rate: float = 1e-3, clip_norm: float = 5.0,
                   optimizer: str = "adam") -> optax.GradientTransformation:
  """Global-norm gradient clipping (off when `clip_norm` is 0), then Adam or SGD."""
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"unknown train.optimizer {optimizer!r}; valid optimizers: "
                     f"{', '.join(OPTIMIZERS)}")
  chain = [OPTIMIZERS[optimizer](learning_rate)]
  if clip_norm:
    chain.insert(0, optax.clip_by_global_norm(clip_norm))
  return optax.chain(*chain)


def optimizer_from_config(train_config) -> optax.GradientTransformation:
  """The optimizer of a `config.train` section."""
  return make_optimizer(train_config.learning_rate, train_config.clip_norm,
                        train_config.optimizer)
