"""The tables `speed.py` prints: plain text for the terminal, then markdown for README."""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
from typing import Any

HIDDEN, LATENT, PIXELS, BATCH = (512, 256), 32, 784, 128
WAYS = {
    "a": "(a) freebits",
    "b": "(b) freebits --pack-size 1",
    "c": "(c) torchvision loop",
    "d": "(d) tensor loop",
}


# ------------------------------------------------------------------------------------------------
# FLOPs: what a run-epoch costs in the MLP's matrix products


def matmul_flops() -> tuple[int, int]:
    """(training FLOPs per example, evaluation FLOPs per example) of the matmuls.

    Every linear layer of W = fan_in·fan_out weights costs 2W FLOPs forward (a multiply and an
    add per weight) and 4W backward (gradients of its input and of its weights); the first layer
    needs no input gradient (the data have none), so training costs 6·ΣW − 2·W_first per example.
    The per-epoch test ELBO is a forward pass: 2·ΣW. Biases, activations and the loss are ignored.
    """
    enc = [PIXELS, *HIDDEN]
    dec = [LATENT, *reversed(HIDDEN), PIXELS]
    shapes = [*itertools.pairwise(enc), (HIDDEN[-1], 2 * LATENT)]
    shapes += list(itertools.pairwise(dec))
    weights = sum(a * b for a, b in shapes)
    return 6 * weights - 2 * shapes[0][0] * shapes[0][1], 2 * weights


def useful_flops(runs: int, epochs: int, n_train: int, n_test: int) -> float:
    train, evaluation = matmul_flops()
    return float(runs * epochs * (n_train * train + n_test * evaluation))


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
        lines[1] = "|---" + lines[1][5:]  # first column left-aligned
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    fmt = [f"{{:<{widths[0]}}}"] + [f"{{:>{w}}}" for w in widths[1:]]
    lines = ["  ".join(f.format(c) for f, c in zip(fmt, header, strict=True))]
    lines.append("-" * len(lines[0]))
    lines += ["  ".join(f.format(c) for f, c in zip(fmt, row, strict=True)) for row in rows]
    return "\n".join(lines)


def _ratio(base: dict[str, Any] | None, way: dict[str, Any]) -> str:
    return f"{base['seconds'] / way['seconds']:.2f}×" if base else "–"


def way_rows(figures: dict[str, Any], cuda: bool) -> tuple[list[str], list[list[str]]]:
    ways, peak = figures["ways"], figures["machine"]["peak_gflops"]
    flops = useful_flops(ways["runs"], ways["epochs"], ways["n_train"], ways["n_test"])
    header = ["way", "wall s", "run-epochs/s", "vs (c)", "vs (d)", "GFLOP/s", "% of peak"]
    header += ["peak RSS MB", *(["CUDA peak MB"] if cuda else []), "mean test ELBO"]
    rows = []
    for key, label in WAYS.items():
        if key not in ways:
            continue
        way = ways[key]
        gflops = flops / way["seconds"] / 1e9
        elbos = list(way.get("test_elbo", {}).values())
        row = [
            label,
            f"{way['seconds']:.1f}",
            f"{ways['runs'] * ways['epochs'] / way['seconds']:.3f}",
            _ratio(ways.get("c"), way),
            _ratio(ways.get("d"), way),
            f"{gflops:.1f}",
            f"{100 * gflops / peak:.1f}%",
            f"{way['rss_mb']:.0f}",
        ]
        if cuda:
            row.append(f"{way.get('cuda_peak_bytes', math.nan) / 2**20:.0f}")
        row.append(f"{statistics.fmean(elbos):.2f}" if elbos else "–")
        rows.append(row)
    return header, rows


def scaling_rows(figures: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    scale, peak = figures["scaling"], figures["machine"]["peak_gflops"]
    base = scale["seconds"].get("1")
    header = ["K", "seconds", "run-epochs/s", "per-member speed-up vs K=1", "GFLOP/s", "% of peak"]
    rows = []
    for label, seconds in scale["seconds"].items():
        if label == "warm-up":
            continue
        k = int(label)
        gflops = useful_flops(k, 1, scale["n_train"], scale["n_test"]) / seconds / 1e9
        speedup = f"{base * k / seconds:.2f}×" if base else "–"
        rows.append(
            [
                label,
                f"{seconds:.2f}",
                f"{k / seconds:.3f}",
                speedup,
                f"{gflops:.1f}",
                f"{100 * gflops / peak:.1f}%",
            ]
        )
    return header, rows


def _header(figures: dict[str, Any], args: argparse.Namespace) -> list[str]:
    machine, ways = figures["machine"], figures["ways"]
    train, evaluation = matmul_flops()
    return [
        f"device: {args.device} — {machine['device_name']}",
        f"torch {machine['torch']}, {machine['threads']} CPU threads",
        f"fp32 matmul peak measured now: {machine['peak_gflops']:.0f} GFLOP/s (torch.mm); "
        f"load average before {figures['load_before'][0]:.1f}, after {figures['load_after'][0]:.1f}",
        f"sweep: {ways['runs']} runs × {ways['epochs']} epoch(s), {ways['n_train']} training / "
        f"{ways['n_test']} test images, MLP 784-512-256-32, batch 128; useful FLOPs per example: "
        f"{train / 1e6:.2f} M training, {evaluation / 1e6:.2f} M test ELBO",
    ]


def _packed_vs_alone(ways: dict[str, Any]) -> str | None:
    if "a" not in ways or "b" not in ways:
        return None
    a, b = ways["a"]["test_elbo"], ways["b"]["test_elbo"]
    delta = max((abs(a[r] - b[r]) for r in a.keys() & b.keys()), default=math.nan)
    return f"max |Δ final test ELBO| of a run, (a) vs (b): {delta:.3g} nats"


def _scaling_title(scale: dict[str, Any]) -> str:
    return (
        f"scaling: packs of K runs, {scale['n_train'] // 128} steps of batch 128 "
        f"({scale['n_train']} images) + test ELBO on {scale['n_test']}; MI and IWAE off"
    )


LEGEND = (
    "vs (c), vs (d): that way's speed over the plain torchvision / tensor loop (>1: faster). "
    "GFLOP/s: the MLP's matmul FLOPs\n(6·weights − 2·first-layer weights per training "
    "example, 2·weights per test example) over wall seconds."
)


def markdown(figures: dict[str, Any], args: argparse.Namespace) -> str:
    """The whole report as a Markdown document (what `--markdown FILE` writes)."""
    ways = figures["ways"]
    parts = ["\n".join(f"- {line}" for line in _header(figures, args))]
    if any(k in ways for k in WAYS):
        parts.append(_table(*way_rows(figures, args.device.startswith("cuda")), markdown=True))
        if (line := _packed_vs_alone(ways)) is not None:
            parts.append(line)
    if "scaling" in figures:
        parts.append(_scaling_title(figures["scaling"]))
        parts.append(_table(*scaling_rows(figures), markdown=True))
    commands = ways.get("commands", {})
    if commands:
        parts.append("\n".join(f"- {WAYS[w]}: `{c}`" for w, c in commands.items()))
    parts.append(LEGEND.replace("\n", " "))
    return "\n\n".join(parts) + "\n"


def report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    ways = figures["ways"]
    cuda = args.device.startswith("cuda")
    print()
    print("\n".join(_header(figures, args)))
    if any(k in ways for k in WAYS):
        print()
        print(_table(*way_rows(figures, cuda), markdown=False))
        if (line := _packed_vs_alone(ways)) is not None:
            print(line)
    if "scaling" in figures:
        print()
        print(_scaling_title(figures["scaling"]))
        print(_table(*scaling_rows(figures), markdown=False))
    print()
    print("markdown:")
    print()
    if any(k in ways for k in WAYS):
        print(_table(*way_rows(figures, cuda), markdown=True))
        print()
    if "scaling" in figures:
        print(_table(*scaling_rows(figures), markdown=True))
        print()
    print(LEGEND)
