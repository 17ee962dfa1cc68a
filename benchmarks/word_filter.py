"""What the word filter costs: screening a long prompt, and scanning a streamed answer chunk by chunk.

    .venv/bin/python benchmarks/word_filter.py [--chars 100000] [--chunk 3]

Uses the realistic lists and the ordinary-sentence corpus of the tests (tests/governance/data):
the corpus repeated to `--chars` characters is screened as one prompt, and the corpus alone is fed
to one output scanner in chunks of `--chunk` characters (about one token each), then again with a
logprob entry per chunk carrying `--top` alternatives (other chunks of the corpus). CPU time of this
process (`time.process_time`), so other load on the machine does not inflate it; best of 3.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from tokenyard.gateway.filtered_choice import FilteredChoice
from tokenyard.governance.content_filter import WordFilter
from tokenyard.governance.wordlists import FilterConfig
from tokenyard.protocol.internal import GenerateChunk, LogprobEntry, TokenLogprobs

DATA = Path(__file__).resolve().parent.parent / "tests" / "governance" / "data"


def best_of(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=3)
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    words = WordFilter.from_config(
        FilterConfig(word_files=[DATA / "drugs.txt", DATA / "crime.txt"], allow_files=[DATA / "allow.txt"])
    )
    assert words is not None
    lines = [line for line in (DATA / "ordinary.txt").read_text(encoding="utf-8").splitlines() if line[:1] != "#"]
    corpus = "\n".join(lines)
    prompt = (corpus * (args.chars // len(corpus) + 1))[: args.chars]
    screen = best_of(3, lambda: words.first_hit(None, [("prompt", prompt)]))
    print(f"input: {len(prompt)} characters screened in {screen * 1000:.1f} ms")
    chunks = [corpus[i : i + args.chunk] for i in range(0, len(corpus), args.chunk)]

    def stream() -> None:
        scanner = words.scanner(None)
        assert scanner is not None
        for chunk in chunks:
            scanner.feed(chunk)
        scanner.finish()

    scan = best_of(3, stream)
    print(f"output: {len(chunks)} chunks of {args.chunk} characters, {scan / len(chunks) * 1e6:.1f} us per chunk")
    with_logprobs = [_with_entry(chunk, chunks[i + 1 : i + 1 + args.top]) for i, chunk in enumerate(chunks)]

    def stream_logprobs() -> None:
        scanner = words.scanner(None)
        assert scanner is not None
        choice = FilteredChoice(scanner)
        for chunk in with_logprobs:
            choice.apply(chunk)

    scan = best_of(3, stream_logprobs)
    print(f"output with logprobs, {args.top} alternatives: {scan / len(chunks) * 1e6:.1f} us per chunk")


def _with_entry(text: str, alternatives: list[str]) -> GenerateChunk:
    top = [LogprobEntry(token=alt, logprob=-1.0, bytes=list(alt.encode())) for alt in alternatives]
    entry = TokenLogprobs(token=text, logprob=-0.5, bytes=list(text.encode()), top_logprobs=top)
    return GenerateChunk(text=text, logprobs=[entry])


if __name__ == "__main__":
    main()
