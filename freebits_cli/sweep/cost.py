"""What a pack costs before it trains: memory (to size packs), FLOPs and a measured pilot (to time them).

Memory per member (float32, Adam): weights, gradients and Adam's two moments are 16 bytes per
parameter; the activations autograd keeps for the backward pass of an MLP VAE are about
4·(2P + 2Σh + 3D) bytes per example (the input and the logits, each hidden layer on the way in and
out, and μ, log σ², z); evaluation adds a bounded chunk of forward activations or the IWAE budget.
The data set lives on the device once per pack. A config whose single member does not fit is refused
before anything starts, instead of being killed by the OS or failing with an out-of-memory error.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from freebits_cli.spec import ModelSpec, RunConfig
from freebits_cli.sweep.cores import Timing

if TYPE_CHECKING:
    from freebits_cli.sweep.runs import PlannedRun

#: Share of the free memory a pack may plan to use (allocator slack, fragmentation, other processes).
HEADROOM = 0.8
#: Examples per evaluation chunk and decoder outputs per member in the IWAE bound (as in metrics).
EVAL_CHUNK = 2048
IWAE_ELEMENTS = 2**22
#: The pilot times rounds of training steps (after two warm-up steps), each of at least
#: PILOT_STEPS steps and PILOT_ROUND_S seconds (at most PILOT_MAX_STEPS steps), until the last
#: PILOT_ROUNDS rounds agree within PILOT_TOLERANCE (their spread over their median) or
#: PILOT_MAX_S have passed: one short round can be timed during a burst of other work on a
#: shared machine and be off several times over.
PILOT_STEPS, PILOT_ROUND_S, PILOT_MAX_STEPS = 3, 0.3, 200
PILOT_ROUNDS, PILOT_TOLERANCE, PILOT_MAX_S = 3, 0.10, 6.0
#: The choice of workers × threads (`cpu_timing`) pilots shorter rounds, no evaluation, and stops
#: sooner: it weighs two ways whose times differ by the start-up of a worker or more, and it is
#: paid before every CPU sweep (measured on 2 cores, the speed benchmark's sweep: 4.8–10 s with
#: the estimate's rounds, about 1 s with these).
CHOICE_ROUND_S, CHOICE_MAX_S = 0.1, 1.2


@dataclass(frozen=True)
class Memory:
    """Estimated bytes of one pack: `per_member` for each run in it, `shared` once (the data)."""

    parameters: int  # per member
    per_member: int
    shared: int

    def total(self, members: int) -> int:
        return self.shared + members * self.per_member


def pixels(image_shape: Sequence[int]) -> int:
    return math.prod(image_shape)


def count_parameters(model: ModelSpec, image_shape: Sequence[int], vocab_size: int = 0) -> int:
    """The real parameter count of one member, from the model built on the meta device."""
    import torch

    from freebits_cli.models import build_model

    with torch.device("meta"):
        packed = build_model(model, tuple(image_shape), 1, vocab_size)
    return sum(p.numel() for p in packed.parameters())


def estimate_memory(
    run: RunConfig, image_shape: Sequence[int], n_train: int, n_test: int, vocab_size: int = 0
) -> Memory:
    p, d = pixels(image_shape), run.model.latent_dim
    hidden = sum(run.model.hidden)
    params = count_parameters(run.model, image_shape, vocab_size)
    weights = 16 * params  # weights + grads + Adam m and v, float32
    activations = 4 * (2 * p + 2 * hidden + 3 * d) * run.train.batch_size
    if vocab_size:  # text: per token, logits and their softmax, LSTM gates and states, embeddings
        per_token = 3 * vocab_size + 12 * hidden + 4 * run.model.embedding_dim
        activations = 4 * (p * per_token + 3 * d) * run.train.batch_size
    evaluation = max(
        4 * (2 * p + hidden + 3 * d) * min(n_test, EVAL_CHUNK),
        4 * 4 * IWAE_ELEMENTS if run.eval.iwae_samples else 0,  # logits, targets, log-probs, z
    )
    data = 4 * p * (n_train + n_test)
    return Memory(params, weights + activations + evaluation, data)


def available_bytes(device: str) -> int:
    """Free memory on `device`: the GPU's free memory, or the host's available memory."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 62


def members_that_fit(memory: Memory, available: int) -> int:
    """How many members one pack may hold within HEADROOM of `available` bytes (0: not even one)."""
    budget = HEADROOM * available - memory.shared
    return max(0, int(budget // memory.per_member))


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def train_flops(params: int, n_train: int) -> float:
    """FLOPs of one member's training epoch: forward 2·params per example, backward twice that."""
    return 6.0 * params * n_train


def eval_flops(run: RunConfig, params: int, n_test: int, final: bool) -> float:
    """One member's evaluation: a forward pass over the test set; at the end also k IWAE samples,
    each through the decoder (about half the parameters), and the mutual information, which
    evaluates log q(z_i | x_j) for every pair of test examples (about 4 FLOPs per pair and unit)."""
    flops = 2.0 * params * n_test
    if final:
        flops += params * n_test * run.eval.iwae_samples
        if run.eval.mi:
            flops += 4.0 * n_test**2 * run.model.latent_dim
    return flops


def pack_flops_parts(
    run: RunConfig, params: int, members: int, n_train: int, n_test: int
) -> tuple[float, float]:
    """A pack's (training, evaluation) FLOPs: they run at different rates (small batches with a
    backward pass and Adam, against large forward-only chunks), so each is timed by its own
    pilot."""
    epochs = run.train.epochs
    train = epochs * train_flops(params, n_train)
    evaluation = (epochs - 1) * eval_flops(run, params, n_test, False)
    evaluation += eval_flops(run, params, n_test, True)
    return members * train, members * evaluation


def pack_flops(run: RunConfig, params: int, members: int, n_train: int, n_test: int) -> float:
    return sum(pack_flops_parts(run, params, members, n_train, n_test))


@dataclass(frozen=True)
class PilotRate:
    """The FLOP/s of whole training steps, from the last `rounds` rounds of the pilot: `rate` is
    their median, `slow` and `fast` the slowest and fastest of them."""

    rate: float
    slow: float
    fast: float
    rounds: int
    stable: bool  # the last rounds agreed within PILOT_TOLERANCE before PILOT_MAX_S
    eval_rate: float = 0.0  # FLOP/s of forward-only evaluation chunks (0: not measured)

    def seconds(self, train: float, evaluation: float, rate: float | None = None) -> float:
        """Seconds of `train` and `evaluation` FLOPs at the training rate `rate` (default the
        median), evaluation scaled alike."""
        scale = (rate or self.rate) / self.rate
        return train / (self.rate * scale) + evaluation / ((self.eval_rate or self.rate) * scale)

    @property
    def spread(self) -> float:
        """The rounds' relative spread: (fast - slow) / rate."""
        return (self.fast - self.slow) / self.rate


@dataclass(frozen=True)
class _Pilot:
    """A fresh pack's training step and evaluation chunk on random data, and their FLOPs."""

    step: Callable[[], None]
    evaluate: Callable[[], None]
    step_flops: float  # 6 · parameters · batch: forward, backward, Adam
    eval_flops: float  # 2 · parameters · rows


def _pilot(
    run: RunConfig, image_shape: Sequence[int], members: int, device: str, vocab_size: int
) -> _Pilot:
    import torch

    from freebits_cli.models import build_model

    dev = torch.device(device)
    p = pixels(image_shape)
    model = build_model(run.model, tuple(image_shape), members, vocab_size).to(dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    model.reset([gen] * members)
    optimizer = torch.optim.Adam(model.parameters(), lr=run.train.lr)
    shape = (members, run.train.batch_size, p)
    if vocab_size:  # token ids of full-length sentences (no padding: the dearest batch)
        x = torch.randint(4, vocab_size, shape, device=dev, generator=gen)
    else:
        x = torch.rand(*shape, device=dev, generator=gen)

    def step() -> None:
        mu, logvar = model.encode(x)
        z = mu + torch.randn(mu.shape, device=dev, generator=gen) * (0.5 * logvar).exp()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
        loss = (model.nll(model.decode(z, x), x) + kl).mean(-1).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    # Evaluation: forward passes over large chunks, no gradients (metrics' and the IWAE's form).
    rows = min(EVAL_CHUNK, max(run.train.batch_size, IWAE_ELEMENTS // (p * max(1, vocab_size))))
    xe = x[:, :1].expand(members, rows, p).contiguous()

    def evaluate() -> None:
        with torch.no_grad():
            mu, _ = model.encode(xe)
            model.nll(model.decode(mu, xe), xe).sum()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    step()  # warm-up: allocations, kernel selection, Adam's state
    step()
    params = sum(t.numel() for t in model.parameters())
    return _Pilot(step, evaluate, 6.0 * params * run.train.batch_size, 2.0 * params * rows)


def pilot_flop_rate(
    run: RunConfig,
    image_shape: Sequence[int],
    members: int,
    device: str,
    vocab_size: int = 0,
    threads: int = 0,
) -> PilotRate:
    """Measured FLOP/s of training steps (forward, backward, Adam) of a pack of `members` on
    `device`, with random data, in rounds until the rate is stable, and of evaluation chunks: the
    rates the time estimates divide by, with the spread of the rounds. `threads`: torch's threads
    while timing, as the packs will train (0: as they are); on a busy CPU two threads can be many
    times slower than one, so a pilot on other threads than training's times something else."""
    import torch

    if threads and device == "cpu":
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return pilot_flop_rate(run, image_shape, members, device, vocab_size)
        finally:
            torch.set_num_threads(before)

    pilot = _pilot(run, image_shape, members, device, vocab_size)
    seconds = _timed_rounds(pilot.step)
    rates = sorted(pilot.step_flops / max(s, 1e-9) for s in seconds[-PILOT_ROUNDS:])
    pilot.evaluate()
    eval_seconds = _timed_rounds(pilot.evaluate)
    eval_rate = pilot.eval_flops / max(statistics.median(eval_seconds[-PILOT_ROUNDS:]), 1e-9)
    return PilotRate(
        rate=statistics.median(rates),
        slow=rates[0],
        fast=rates[-1],
        rounds=len(seconds),
        stable=_agree(seconds[-PILOT_ROUNDS:]),
        eval_rate=eval_rate,
    )


def _agree(seconds: Sequence[float]) -> bool:
    """Whether PILOT_ROUNDS round times lie within PILOT_TOLERANCE of their median."""
    if len(seconds) < PILOT_ROUNDS:
        return False
    ordered = sorted(seconds)
    return (ordered[-1] - ordered[0]) <= PILOT_TOLERANCE * ordered[len(ordered) // 2]


def _round(step: Callable[[], None], clock: Callable[[], float], round_s: float) -> float:
    """Seconds per step of one round: at least PILOT_STEPS steps and `round_s` seconds."""
    started, steps = clock(), 0
    while steps < PILOT_STEPS or (clock() - started < round_s and steps < PILOT_MAX_STEPS):
        step()
        steps += 1
    return (clock() - started) / steps


def _timed_rounds(
    step: Callable[[], None], clock: Callable[[], float] = time.perf_counter
) -> list[float]:
    """Seconds per step of each round, until the last PILOT_ROUNDS agree or PILOT_MAX_S pass."""
    began = clock()
    per_step: list[float] = []
    while True:
        per_step.append(_round(step, clock, PILOT_ROUND_S))
        if _agree(per_step[-PILOT_ROUNDS:]) or clock() - began >= PILOT_MAX_S:
            return per_step


def _alternating_rounds(
    step: Callable[[], None],
    counts: Sequence[int],
    clock: Callable[[], float] = time.perf_counter,
) -> dict[int, list[float]]:
    """Seconds per step of rounds at each of torch's thread `counts` in turn (CHOICE_ROUND_S
    each), until every count's last PILOT_ROUNDS agree or CHOICE_MAX_S pass: a burst of other
    work on a shared machine slows neighbouring rounds of both counts alike, not one pilot."""
    import torch

    own = torch.get_num_threads()
    per_step: dict[int, list[float]] = {count: [] for count in counts}
    began = clock()
    try:
        while True:
            for count in counts:
                torch.set_num_threads(count)
                per_step[count].append(_round(step, clock, CHOICE_ROUND_S))
            settled = all(_agree(s[-PILOT_ROUNDS:]) for s in per_step.values())
            if settled or clock() - began >= CHOICE_MAX_S:
                return per_step
    finally:
        torch.set_num_threads(own)


#: A floor under one core's FLOP rate (a slow core on a busy machine): a sweep whose work at this
#: rate could not pay a worker's start-up is not worth the pilot steps that would time it.
SLOW_CORE_FLOPS = 1e9


def cpu_timing(packs: Sequence[Sequence[PlannedRun]], cores: int, startup: float) -> Timing | None:
    """What `cores.choose` weighs for CPU packs: each member's remaining work at one thread, and
    how much faster one process is on `cores` threads, from pilot steps timed at one thread and
    at `cores` in alternating rounds. None when even a slow core would train everything before a
    worker starts."""
    from freebits_cli.sweep.runs import dataset

    members, flops = [], []
    for pack in packs:
        run = pack[0].run
        data = dataset(run.dataset)
        params = count_parameters(run.model, data.image_shape, data.vocab_size)
        full = pack_flops(run, params, 1, len(data.x_train), len(data.x_test))
        remaining = (run.train.epochs - pack[0].start_epoch) / max(1, run.train.epochs)
        for _ in pack:
            members.append((run, data))
            flops.append(full * remaining)
    if sum(flops) / SLOW_CORE_FLOPS * (1 - 1 / cores) < startup:
        return None
    run, data = members[0]
    pilot = _pilot(run, data.image_shape, 1, "cpu", data.vocab_size)
    seconds = _alternating_rounds(pilot.step, (1, cores))
    one, every = (statistics.median(seconds[c][-PILOT_ROUNDS:]) for c in (1, cores))
    rate = pilot.step_flops / max(one, 1e-9)
    return Timing([f / rate for f in flops], one / max(every, 1e-9), startup)
