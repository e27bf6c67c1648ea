"""The page's section of sentences for text runs: what each setting's model reconstructs, what it
says from the prior, and a homotopy between two test sentences (Bowman et al. 2016) — the text
counterpart of the reconstruction and sample figures.

One block per setting (its label as heading), each table two columns at most, with the text
wrapped: a table with a column per setting scrolled sideways and hid the later settings.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

#: (samples.json key, heading) of the tables, in page order; the sampled decodes follow the
#: greedy ones where a run saved them.
TABLES = (
    ("reconstructions", "greedy reconstruction from the posterior mean"),
    ("sampled_reconstructions", "sampled reconstruction"),
    ("prior_samples", "greedy decode of z ~ N(0, I) (the same draws in every setting)"),
    ("sampled_prior_samples", "sampled decode of the same draws"),
    ("homotopy", "Homotopy: decodes along the line between two test sentences' posterior means"),
)
#: Tables beside the test sentences they reconstruct.
BESIDE_ORIGINALS = ("reconstructions", "sampled_reconstructions")
#: Decodes of prior draws, read against the run's marginal KL.
FROM_PRIOR = ("prior_samples", "sampled_prior_samples")
#: A marginal KL KL(q(z)‖p(z)) from this many nats on means the prior puts mass where the
#: aggregate posterior has little ("holes", Hoffman & Johnson 2016; Rezende & Viola 2018): its
#: draws decode codes the decoder was never trained on, so they can read unlike the data.
HOLES_NATS = 1.0


def holes_note(marginal_kl: float | None) -> str:
    """What the page says beside a setting's prior samples when its marginal KL is large."""
    if marginal_kl is None or not marginal_kl >= HOLES_NATS:
        return ""
    return (
        f"Marginal KL {marginal_kl:.2f} nats: the prior N(0, I) covers regions the aggregate "
        "posterior q(z) leaves empty (holes), so these draws decode codes the decoder rarely "
        "saw in training and may read unlike the data."
    )


def sentences_html(
    sentences: Mapping[str, Mapping[str, list[str]]],
    labels: Mapping[str, str],
    marginal_kl: Mapping[str, float | None] | None = None,
) -> str:
    """One block per setting (`labels`: run key -> setting label, in table order) holding its
    tables of sentences; reconstructions beside the test sentence they reconstruct, prior
    samples with a note where the run's `marginal_kl` says they fall in holes."""
    if not sentences:
        return ""
    esc = html.escape
    blocks = []
    for key in [k for k in labels if k in sentences]:
        run = sentences[key]
        originals = run.get("originals", [])
        parts = []
        for name, heading in TABLES:
            lines = run.get(name, [])
            if not lines:
                continue
            if name in BESIDE_ORIGINALS:
                head = f"<tr><th>test sentence</th><th>{esc(heading)}</th></tr>"
                body = "".join(
                    f"<tr><td>{esc(originals[i]) if i < len(originals) else ''}</td>"
                    f"<td>{esc(line)}</td></tr>"
                    for i, line in enumerate(lines)
                )
            else:
                head = f"<tr><th>{esc(heading)}</th></tr>"
                body = "".join(f"<tr><td>{esc(line)}</td></tr>" for line in lines)
            parts.append(f'<table class="sentences">{head}{body}</table>')
            note = holes_note((marginal_kl or {}).get(key)) if name in FROM_PRIOR else ""
            if note and name == FROM_PRIOR[0]:
                parts.append(f'<p class="meta">{esc(note)}</p>')
        if parts:
            blocks.append(
                f'<details open class="setting"><summary>{esc(labels[key])}</summary>'
                f"{''.join(parts)}</details>"
            )
    return "".join(blocks)
