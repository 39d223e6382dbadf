"""Field checks that every family's config struct shares: one `ValueError` naming the field."""


def check_choice(name: str, value, choices) -> None:
  if value not in choices:
    raise ValueError(f"model.{name}={value!r} is not valid; valid choices: "
                     f"{', '.join(map(str, choices))}")


def check_int(name: str, value, low: int) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(f"model.{name} must be " +
                     ("a positive int" if low == 1 else f"an int >= {low}") + f", got {value!r}")
