"""`python -m tests.faults.poison_entry gateway|worker [args]`: that real process, with one more
architecture, `poison`: the demo mlp, except that a batch holding an input whose first value
is 666 kills the process with SIGKILL, as a segfaulting model would, and one whose first
value is 777 takes 3 s (a long job)."""

from __future__ import annotations

import os
import runpy
import signal
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from runtime import architectures

if TYPE_CHECKING:
    import torch

POISON = 666.0
SLOW = 777.0


def _build(config: dict[str, Any]) -> torch.nn.Module:
    module = architectures.ARCHITECTURES["mlp"].build(config)

    def die_on_poison(_: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if bool((inputs[0][:, 0] == POISON).any()):
            os.kill(os.getpid(), signal.SIGKILL)
        if bool((inputs[0][:, 0] == SLOW).any()):
            time.sleep(3)

    module.register_forward_pre_hook(die_on_poison)
    return module


def main() -> None:
    architectures.ARCHITECTURES["poison"] = replace(
        architectures.ARCHITECTURES["mlp"], name="poison",
        description="the mlp; an input starting with 666 kills the worker", build=_build)
    target = sys.argv.pop(1)
    runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
