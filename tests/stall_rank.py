"""``proximal train`` with rank 1 stalling in update 2, for the tests of a hang (tests/test_distributed.py):

    python -m torch.distributed.run --nproc_per_node=2 tests/stall_rank.py WHERE [train options]

WHERE is ``rollout`` (rank 1 stops as its rollout begins) or ``learning`` (rank 1 stops after its first
minibatch's gradient all-reduce, before the second's). The stall outlasts any dist_timeout of the tests: rank 0
must give up and say where rank 1 is; torchrun then ends rank 1.
"""

import os
import sys
import time

from proximal import distributed
from proximal.cli import main

STALL_UPDATE = 2
STALL_SECONDS = 600


def stall_rank_one(where: str) -> None:
    record, average = distributed.progress, distributed._mean_gradient
    averaged = None  # gradients averaged since the phase WHERE of update 2 began; None before it

    def progress(update: int, phase: str) -> None:
        nonlocal averaged
        record(update, phase)
        averaged = 0 if (update, phase) == (STALL_UPDATE, where) else None
        if averaged is not None and where == "rollout":
            time.sleep(STALL_SECONDS)

    def stalling_average(*args, **kwargs) -> None:
        nonlocal averaged
        if averaged is not None:
            averaged += 1
            if averaged == 2:  # between two collectives, as a rank stuck in its own computation
                time.sleep(STALL_SECONDS)
        average(*args, **kwargs)

    distributed.progress, distributed._mean_gradient = progress, stalling_average


if __name__ == "__main__":
    if os.environ["RANK"] == "1":
        stall_rank_one(sys.argv[1])
    sys.exit(main(["train", *sys.argv[2:]]))
