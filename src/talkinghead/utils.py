"""Small shared helpers."""
from __future__ import annotations

import contextlib
import importlib
import queue
import sys
import threading
import types
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class _Deferred(types.ModuleType):
    """Stands in for a module that was not imported yet; imports it on first attribute use."""

    def __getattr__(self, attr: str):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


@contextlib.contextmanager
def deferred_imports(*names: str) -> Iterator[None]:
    """Within the block, `import NAME` of a module in `names` that is not imported yet binds a
    stand-in that imports the real module when an attribute of it is first used. The stand-ins
    leave sys.modules when the block ends, so later imports anywhere get the real modules.

    For a library that imports a heavy module at import time but uses it only in functions we
    never call: MediaPipe imports matplotlib.pyplot (~0.25 s) and sounddevice for its drawing and
    recording helpers.
    """
    placed = {name: _Deferred(name) for name in names if name not in sys.modules}
    sys.modules.update(placed)
    try:
        yield
    finally:
        for name, stand_in in placed.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(items: Iterable[T], depth: int = 4) -> Iterator[T]:
    """Iterate `items` in a background thread, `depth` ahead of the consumer.

    Rendering (numpy/OpenCV, which release the GIL) then overlaps with encoding. Order is kept, an
    exception in the producer is re-raised in the consumer, and a consumer that stops early (or
    raises) stops the producer.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(x) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for x in items:
                if not put(x):
                    return
            put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(_Failed(e))

    worker = threading.Thread(target=run, name="talkinghead-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            x = q.get()
            if x is _DONE:
                return
            if isinstance(x, _Failed):
                raise x.exc
            yield x
    finally:
        stop.set()
        worker.join()


def select_trainable(model, train, freeze=()) -> list[str]:
    """Set requires_grad by parameter-name patterns (fnmatch): on for names matching a `train` pattern and
    no `freeze` pattern, off for the rest. Returns the trainable names; patterns that select nothing are an
    InputError (a training stage that would train nothing is a config mistake)."""
    from fnmatch import fnmatch

    from .errors import InputError

    names = []
    for name, p in model.named_parameters():
        on = any(fnmatch(name, pat) for pat in train) and not any(fnmatch(name, pat) for pat in freeze)
        p.requires_grad_(on)
        if on:
            names.append(name)
    if not names:
        raise InputError("the stage's train/freeze patterns select no parameter",
                         "check the patterns against the model's parameter names")
    return names


def torch_dtype(name: str):
    """The torch dtype of a `dtype` control value: fp32, fp16 or bf16."""
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def resolve_precision(device: str, dtype: str, on_cpu: tuple[str, ...] = ("fp32",),
                      cpu_hint: str = "use fp32 on a CPU") -> tuple:
    """(device, torch dtype) of the `device` and `dtype` controls; a dtype outside `on_cpu` is refused on a CPU."""
    from .errors import InputError

    resolved = resolve_device(device)
    if resolved == "cpu" and dtype not in on_cpu:
        raise InputError(f"{dtype} needs a GPU", cpu_hint, field="dtype")
    return resolved, torch_dtype(dtype)


def resolve_device(name: str) -> str:
    """A `--device` value as torch takes it: "auto" is the GPU when torch sees one, else the CPU; a GPU that
    torch does not see is the user's mistake (InputError)."""
    import torch

    from .errors import InputError

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"is {name}, a GPU, but torch sees none", "use cpu", field="device")
    return name
