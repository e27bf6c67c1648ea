"""A sentence corpus of real English for trying the text path: the quotations of Debian's
`fortunes` package, one tokenised sentence per line, split 90/5/5 into train/valid/test.

    apt-get install fortunes
    python benchmarks/fortunes_corpus.py CORPUS_DIR
    freebits sweep configs/text_lambda_sweep.yaml --data-dir CORPUS_DIR

Tokens are lower-cased words and punctuation marks (PTB-like); sentences of 3 to 30 tokens kept,
duplicates dropped; the split is seeded, so the corpus is the same on every machine.
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

SOURCE = Path("/usr/share/games/fortunes")
TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[.,!?;:()\"-]")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    out = []
    for quote in text.split("\n%\n"):
        body = " ".join(line.strip() for line in quote.splitlines() if not line.startswith("\t\t"))
        for sentence in SENTENCE_END.split(body):
            tokens = TOKEN.findall(sentence.lower())
            if 3 <= len(tokens) <= 30:
                out.append(" ".join(tokens))
    return out


def main(folder: Path) -> None:
    found: dict[str, None] = {}
    for path in sorted(SOURCE.glob("*.u8")):
        if path.is_file() and "off" not in path.parts:
            for sentence in sentences(path.read_text(encoding="utf-8", errors="replace")):
                found.setdefault(sentence)
    lines = list(found)
    random.Random(0).shuffle(lines)
    n = len(lines)
    splits = {"test.txt": lines[: n // 20], "valid.txt": lines[n // 20 : n // 10]}
    splits["train.txt"] = lines[n // 10 :]
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in splits.items():
        (folder / name).write_text("\n".join(part) + "\n", encoding="utf-8")
        print(f"{folder / name}: {len(part)} sentences")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "fortunes-corpus"))
