"""Mixed-precision matmuls: operands in the compute dtype, results at least float32.

With `model.dtype="bfloat16"` the operands are bfloat16 and the products are
accumulated and returned in float32, which is also what XLA's CPU kernels run
fastest (bfloat16 dot products with float32 accumulation).
"""

import jax
import jax.numpy as jnp


def widen(x: jax.Array) -> jax.Array:
  """At least float32: bfloat16 is widened, float64 (in tests) is kept."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """`x @ w` with `x` cast to `w`'s dtype and an at-least-float32 result."""
  return jnp.matmul(x.astype(w.dtype), w,
                    preferred_element_type=jnp.promote_types(w.dtype, jnp.float32))


def einsum(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
  """`jnp.einsum` with `a` cast to `b`'s dtype and an at-least-float32 result."""
  return jnp.einsum(spec, a.astype(b.dtype), b,
                    preferred_element_type=jnp.promote_types(b.dtype, jnp.float32))
