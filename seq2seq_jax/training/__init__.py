"""Training: the pure step, optimizer, schedules, losses, checkpoints, workdir files, loop.

`step` (the pure train step and the loss), `optim` (the optimizer), `schedules`
(teacher-forcing schedules), `losses`, `checkpoints` (orbax), `workdir` (the
files a run writes: metrics, progress, environment, report), `records` (its
metrics records, plots and final outputs), `early_stopping` (patience,
`finished.json`), `warm_start` (`train.init_from`), `stack` (the step mapped
over K members), `members` (one member's files and bookkeeping), `signals`
(Ctrl-C and SIGTERM at a step boundary), `loop` (`train_members`: the one
training loop over K >= 1 members) and `run` (`train_and_evaluate`: a solo
run, a stack of one). This file imports none of them, so a lower layer can
import one without the loop.
"""
