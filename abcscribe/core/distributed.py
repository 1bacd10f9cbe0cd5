"""Several processes on one job: which share of the inputs is this process's, and the few
collective steps the batch commands need (records gathered in input order, totals summed).

A launcher (``torchrun``, ``accelerate launch``) starts the same command once per process and
sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them there is one process and every
function here is a no-op that imports nothing heavy. ``--shard I/N`` (job arrays across
machines) is applied first, by the command; the launcher's ranks then split that shard."""

from __future__ import annotations

import atexit
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of one launch."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Ranks":
        """What the launcher set in the environment (one process when nothing is set)."""
        try:
            size = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError:
            return cls()
        if size < 1 or not 0 <= rank < size:
            return cls()
        return cls(rank, size, local)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.size > 1

    # ---- splitting -------------------------------------------------------------------------
    def take(self, items: Sequence[T], keys: Iterable[Hashable] | None = None) -> list[int]:
        """The indices of ``items`` this process handles. Round robin over the inputs, or over
        the distinct ``keys`` in order of first appearance, so that inputs sharing a key (Q&A
        records of one clip: one output file) go to the same process."""
        if not self.several:
            return list(range(len(items)))
        if keys is None:
            return list(range(self.rank, len(items), self.size))
        owner: dict[Hashable, int] = {}
        mine = []
        for i, key in enumerate(keys):
            if key not in owner:
                owner[key] = len(owner) % self.size
            if owner[key] == self.rank:
                mine.append(i)
        return mine

    def device(self, device: str) -> str:
        """``cuda`` (or ``auto`` on a machine with CUDA) becomes this process's own GPU,
        ``cuda:LOCAL_RANK``, when there are several processes; every other spelling is kept."""
        if not self.several or device not in ("auto", "cuda"):
            return device
        if device == "auto":
            import torch

            if not torch.cuda.is_available():
                return device
        return f"cuda:{self.local_rank}"

    # ---- collectives ---------------------------------------------------------------------
    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        if not self.several:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj, group=_object_group())
        return out

    def share(self, mine: dict[Hashable, Any], chunk: int = 256) -> dict[Hashable, Any]:
        """Every process's ``mine`` merged, on every process: what each computed for its share,
        handed to all. Sent ``chunk`` entries at a time, so no process ever holds more than a
        few chunks of pickled bytes beside the values themselves."""
        if not self.several:
            return dict(mine)
        items = list(mine.items())
        rounds = max(self.gather(math.ceil(len(items) / chunk)))
        out: dict[Hashable, Any] = {}
        for i in range(rounds):
            for part in self.gather(items[i * chunk:(i + 1) * chunk]):
                out.update(part)
        return out

    def start(self, cpu: bool) -> None:
        """Start the default process group the way a Trainer would (gloo on the CPU, nccl on
        GPUs), so collectives before the Trainer's own (sharing prepared inputs) do not leave
        it a group of the wrong kind."""
        if not self.several:
            return
        import torch

        _start_default_group("nccl" if not cpu and torch.cuda.is_available() else "gloo")

    def total(self, n: int | float) -> int | float:
        """``n`` summed over the processes."""
        return sum(self.gather(n))

    def barrier(self) -> None:
        if self.several:
            import torch.distributed as dist

            dist.barrier(group=_object_group())


_GROUP: Any = None


def _object_group():
    """A gloo process group for Python objects (all_gather_object over nccl needs each
    process's GPU set up; the records are small, the CPU path is enough). The default group
    is started from the launcher's environment when nobody has started it yet."""
    global _GROUP
    import torch.distributed as dist

    _start_default_group("gloo")
    if _GROUP is None:
        _GROUP = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    return _GROUP


def _start_default_group(backend: str) -> None:
    """Start the default group from the launcher's environment unless someone has started it."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        # Shut down before the interpreter does: a gloo group left to the process's exit
        # can abort it ("terminate called without an active exception", about 1 run in 30
        # of a short transcribe under torchrun), failing a run whose work was all done.
        atexit.register(_close_group)


def _close_group() -> None:
    global _GROUP
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    _GROUP = None


class InputOrder:
    """Output records of one batch command run by several processes: with one process each
    record is emitted at once (streaming); with several, each process keeps its records and
    ``finish()`` has the main process emit all of them in input order, each exactly once."""

    def __init__(self, ranks: Ranks, emit: Callable[[dict[str, Any]], None]):
        self.ranks, self._emit = ranks, emit
        self._kept: list[tuple[int, dict[str, Any]]] = []

    def __call__(self, index: int, record: dict[str, Any]) -> None:
        if self.ranks.several:
            self._kept.append((index, record))
        else:
            self._emit(record)

    def finish(self) -> None:
        if not self.ranks.several:
            return
        everyone = self.ranks.gather(self._kept)
        self._kept = []
        if self.ranks.is_main:
            for _, record in sorted((pair for part in everyone for pair in part), key=lambda p: p[0]):
                self._emit(record)


def reduce_counts(ranks: Ranks, failed: int, done: int) -> tuple[int, int]:
    """A batch's failure and success counts as the main process reports them (the totals of
    every process) and as the others do (none: only the main process reports and fails)."""
    if not ranks.several:
        return failed, done
    parts = ranks.gather((failed, done))
    if not ranks.is_main:
        return 0, 0
    return sum(p[0] for p in parts), sum(p[1] for p in parts)
