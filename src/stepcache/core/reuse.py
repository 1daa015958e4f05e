"""Reuse-or-store hooks for a group of modules whose outputs a method caches (FORA, T-GATE).

Around each denoiser call a method either has every module of the group return a given
output without running (``reuse``), has them run and remember their outputs (``store``,
collected after the call with ``stored``), or leaves them untouched; ``reset`` ends the
call. Set once per denoiser call, so each hook costs two attribute reads.

The hooks run inside the model's compiled graph under ``torch.compile``. They read one
flag and the module's own attribute ``_stepcache_output``, which holds a module's output
during a call only: no module index, no step, no container of the method enters the
graph, so blocks that share compiled code (``compile_repeated_blocks``) keep sharing it,
and dynamo guards on which flag is set, never on a step.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from torch import nn

OUTPUT = "_stepcache_output"  # a module's attribute, during one denoiser call: the output it returns or returned


class ReuseSlot:
    __slots__ = ("modules", "reusing", "storing")

    def __init__(self, modules: Iterable[nn.Module]) -> None:
        self.modules = list(modules)
        self.reusing = False
        self.storing = False

    def install(self, hooks) -> None:
        for module in self.modules:
            hooks.wrap(module, self._hook(module))

    def reuse(self, outputs: Mapping[int, Any]) -> None:
        """This call, module ``index`` returns ``outputs[index]`` without running."""
        self.reset()
        for index, output in outputs.items():
            self.modules[index].__dict__[OUTPUT] = output
        self.reusing = True

    def store(self) -> None:
        """This call, the modules run and remember their outputs for ``stored``."""
        self.reset()
        self.storing = True

    def stored(self) -> dict[int, Any]:
        """index -> output of the modules that ran since ``store`` (taken from them)."""
        return {index: module.__dict__.pop(OUTPUT) for index, module in enumerate(self.modules)
                if OUTPUT in module.__dict__}

    def reset(self) -> None:
        for module in self.modules:
            module.__dict__.pop(OUTPUT, None)
        self.reusing = self.storing = False

    def _hook(self, module: nn.Module):
        def forward(original, *args, **kwargs):
            if self.reusing:
                return module.__dict__[OUTPUT]
            output = original(*args, **kwargs)
            if self.storing:
                module.__dict__[OUTPUT] = output
            return output

        return forward
