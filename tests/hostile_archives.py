"""Archives a hostile tenant would upload: each reaches for something a model may not.

Built with torch.jit.script where TorchScript compiles the call; otherwise (torch.load, a
custom namespace) by rewriting the code of a clean archive, as an attacker would."""

from __future__ import annotations

import io
import re
import warnings
import zipfile

import torch

from tests.model_archives import torchscript


def scripted(module: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module.eval()), buffer)
    return buffer.getvalue()


class ReadsFile(torch.nn.Module):
    """Returns the first bytes of a file as its output."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = torch.from_file(self.path, size=4, dtype=torch.uint8)
        return x + data.to(torch.float32)


class WritesFile(torch.nn.Module):
    """Saves its input to a file, then answers it."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.save(x, self.path)
        return x


class Writer(torch.nn.Module):
    """A clean-looking outer model whose submodule writes: found inlined, in the submodule."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.inner = WritesFile(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * 2


class Prints(torch.nn.Module):
    """Writes to the worker's console (prim::Print): found only in the loaded graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("hello from a tenant")
        return x


class RunsAtLoad(torch.nn.Module):
    """Has a __setstate__, which torch.jit.load runs while loading (before any check)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.n

    @torch.jit.export
    def __getstate__(self) -> tuple[int, bool]:
        return self.n, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[int, bool]) -> None:
        self.n, self.training = state


class Allocates(torch.nn.Module):
    """Asks for `gib` GiB of memory (not touched: without a limit this succeeds)."""

    def __init__(self, gib: int) -> None:
        super().__init__()
        self.size = gib << 30

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.empty(self.size, dtype=torch.uint8)[0].to(torch.float32) * 0


class Spins(torch.nn.Module):
    """Loops `steps` times before it answers (a forward that never ends, for large steps)."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = 0
        while i < self.steps:
            i += 1
        return x + 1


def with_code(data: bytes, rewrite: str) -> bytes:
    """The archive with its forward's return statement replaced by `rewrite`."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if "/code/" in info.filename and info.filename.endswith(".py"):
                body = re.sub(rb"return .*", rewrite.encode(), body, count=1)
            dst.writestr(info, body)
    return out.getvalue()


def loads_a_file() -> bytes:
    return with_code(torchscript(1.0), 'return torch.load("/etc/passwd")')


def unknown_namespace() -> bytes:
    return with_code(torchscript(1.0), "return ops.evil.steal(x)")
