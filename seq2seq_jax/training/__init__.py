"""Training: the pure step, optimizer, schedules, losses, checkpoints, workdir files, loop.

`step` (the pure train step and the loss), `optim` (the optimizer), `schedules`
(teacher-forcing schedules), `losses`, `checkpoints` (orbax), `workdir` (the
files a run writes: metrics, progress, environment, report), `run`
(`train_and_evaluate`, the loop), `early_stopping` (patience, `finished.json`),
`warm_start` (`train.init_from`), `stack` (the stacked step of sweep members)
and `stack_run` (its loop). This file imports none of them, so a lower
layer can import one without the loop.
"""
