"""A CUDA graph on the CPU, for rehearsing the capture path of `freebits_cli.engine.step` without a GPU.

A real CUDA graph records the kernels a region launches — without running them — and `replay()`
launches exactly those kernels again, on exactly the same memory: nothing the Python code decides
later (a new float, a new tensor, a branch) reaches a replay. `FakeCUDAGraph` does the same with
aten operators: under `fake_graph(g)` every operator is recorded with the very tensors it read and
wrote (kept alive, as a graph keeps its memory pool), and `replay()` runs the recorded operators
again in order — views are not re-made (they still alias the recorded storage), in-place operators
run again on their recorded arguments, and a computing operator's fresh result is copied into the
tensor it produced at capture, which later operators hold. Python scalars are frozen as a real
graph freezes them. Like a real capture, the region's own effects on tensors that existed before
it are undone when it ends (a real capture runs nothing), and an operator that must wait on the
host (`.item()`, data-dependent shapes) fails the capture with a RuntimeError, as CUDA's
"operation not permitted when stream is capturing" does.

`install(monkeypatch)` puts the fakes where `step.PackStep` looks (torch.cuda's CUDAGraph, graph,
Stream, stream, current_stream) and makes packs run as one batched model on the CPU, as on CUDA.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten
#: Operators that read a value back to the host or whose output shape depends on the data: a
#: CUDA stream that is capturing refuses them.
HOST_SYNC = {
    aten._local_scalar_dense.default,
    aten.is_nonzero.default,
    aten.equal.default,
    aten.nonzero.default,
    aten.masked_select.default,
    aten._unique2.default,
    aten.unique_dim.default,
}


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


@dataclass
class Op:
    """One recorded operator: what it is, what it read and wrote, and how a replay redoes it."""

    func: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    out: Any
    kind: str  # "view" (not redone), "inplace" (run again), "compute" (run again, copied back)

    def replay(self) -> None:
        if self.kind == "view":
            return
        fresh = self.func(*self.args, **self.kwargs)
        if self.kind == "compute":
            for old, new in zip(_tensors(self.out), _tensors(fresh), strict=True):
                old.copy_(new)


@dataclass
class FakeCUDAGraph:
    """What a capture recorded (`ops`), and how often it was replayed."""

    ops: list[Op] = field(default_factory=list)
    replays: int = 0
    #: Every graph made while the fakes are installed, in order (the test's view of the captures).
    made: ClassVar[list[FakeCUDAGraph] | None] = None

    def __post_init__(self) -> None:
        if FakeCUDAGraph.made is not None:
            FakeCUDAGraph.made.append(self)

    def replay(self) -> None:
        assert self.ops, "replay of a graph that captured nothing"
        with torch.no_grad():
            for op in self.ops:
                op.replay()
        self.replays += 1

    def op_names(self) -> list[str]:
        return [str(op.func) for op in self.ops]


class _Recorder(TorchDispatchMode):
    def __init__(self, graph: FakeCUDAGraph) -> None:
        super().__init__()
        self.graph = graph
        self.made: set[int] = set()  # storages the capture allocated (kept alive in its ops)
        self.saved: dict[int, tuple[Any, Any]] = {}  # storages from before it, and their contents

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in HOST_SYNC:
            raise RuntimeError(f"{func} waits on the host: operation not permitted when capturing")
        schema = func._schema
        written = []
        for i, arg in enumerate(schema.arguments):
            if arg.alias_info is not None and arg.alias_info.is_write:
                value = args[i] if i < len(args) else kwargs.get(arg.name)
                written += _tensors(value)
        for tensor in written:  # keep what existed before the capture, to undo its effects
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key not in self.made and key not in self.saved:
                self.saved[key] = (storage, storage.clone())
        out = func(*args, **kwargs)
        aliases = all(r.alias_info is not None for r in schema.returns) and schema.returns
        kind = "inplace" if written else "view" if aliases else "compute"
        self.graph.ops.append(Op(func, args, kwargs, out, kind))
        if kind == "compute":
            self.made.update(t.untyped_storage().data_ptr() for t in _tensors(out))
        return out


@contextlib.contextmanager
def fake_graph(graph: FakeCUDAGraph, **_: Any) -> Iterator[None]:
    """`torch.cuda.graph(g)`: record the region into `g`, then undo its effects, as capture does."""
    recorder = _Recorder(graph)
    with recorder:
        yield
    for storage, before in recorder.saved.values():
        storage.copy_(before)


class FakeStream:
    def __init__(self, device: Any = None) -> None:
        self.device = device

    def wait_stream(self, other: FakeStream) -> None:
        pass


@dataclass
class Installed:
    """The graphs made and the streams entered while the fakes were installed."""

    graphs: list[FakeCUDAGraph]
    streams: list[FakeStream]


def install(monkeypatch: pytest.MonkeyPatch) -> Installed:
    """Fake torch.cuda's graph API and run packs batched on the CPU, as they run on CUDA."""
    from freebits_cli.models import packing

    installed = Installed([], [])
    monkeypatch.setattr(FakeCUDAGraph, "made", installed.graphs)
    current = FakeStream()

    @contextlib.contextmanager
    def stream(s: FakeStream) -> Iterator[None]:
        installed.streams.append(s)
        yield

    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeCUDAGraph)
    monkeypatch.setattr(torch.cuda, "graph", fake_graph)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "stream", stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: ("fake pool",))
    monkeypatch.setattr(packing, "batched", lambda device: True)
    return installed
