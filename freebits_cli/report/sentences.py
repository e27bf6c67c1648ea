"""The page's section of sentences for text runs: what each setting's model reconstructs, what it
says from the prior, and a homotopy between two test sentences (Bowman et al. 2016) — the text
counterpart of the reconstruction and sample figures."""

from __future__ import annotations

import html
from collections.abc import Mapping

#: (samples.json key, heading) of the tables, in page order.
TABLES = (
    ("reconstructions", "Test sentences and their greedy reconstructions from the posterior mean"),
    ("prior_samples", "Greedy decodes of the same draws z ~ N(0, I)"),
    ("homotopy", "Homotopy: decodes along the line between two test sentences' posterior means"),
)


def sentences_html(
    sentences: Mapping[str, Mapping[str, list[str]]], labels: Mapping[str, str]
) -> str:
    """Tables of sentences, one column per setting (`labels`: run key -> setting label)."""
    if not sentences:
        return ""
    esc = html.escape
    keys = [k for k in labels if k in sentences]
    parts = []
    for name, heading in TABLES:
        columns = [sentences[k].get(name, []) for k in keys]
        rows = max((len(c) for c in columns), default=0)
        if not rows:
            continue
        head = "".join(f"<th>{esc(labels[k])}</th>" for k in keys)
        if name == "reconstructions":
            originals = next((sentences[k].get("originals", []) for k in keys), [])
            head = "<th>test sentence</th>" + head
            columns = [originals, *columns]
        body = "".join(
            "<tr>"
            + "".join(f"<td>{esc(c[i]) if i < len(c) else ''}</td>" for c in columns)
            + "</tr>"
            for i in range(rows)
        )
        parts.append(
            f'<h3>{esc(heading)}</h3><div class="scroll"><table><tr>{head}</tr>{body}</table></div>'
        )
    return "".join(parts)
