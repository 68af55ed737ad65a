"""sentence-transformers baseline for the embedding benchmark (scripts/bench-serve.sh).

    python st_baseline.py <bench_out_dir> <threads>

Embeds the chunk texts in `chunks.json` (written by `cargo bench --bench serve -- embed`) with
the same model directory, batch size and number of passes, on CPU with `threads` torch threads,
normalised like the runtime's embedder. Also checks that the first vectors agree with the
runtime's (cosine). Writes `st_baseline.json` and prints one line.
"""

import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer, __version__  # noqa: E402


def main():
    out_dir, threads = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(threads)
    with open(os.path.join(out_dir, "chunks.json")) as f:
        spec = json.load(f)
    texts, batch, passes = spec["texts"], spec["batch_size"], spec["passes"]
    model = SentenceTransformer(spec["embedder_dir"], device="cpu")
    model.encode(texts[:4], batch_size=batch)
    rates, vectors = [], None
    for _ in range(passes):
        start = time.perf_counter()
        vectors = model.encode(texts, batch_size=batch, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
        rates.append(len(texts) / (time.perf_counter() - start))
    ours = np.array(spec["first_vectors"], dtype=np.float32)
    cosines = (vectors[: len(ours)] * ours).sum(axis=1)
    result = {
        "sentence_transformers": __version__,
        "torch": torch.__version__,
        "threads": threads,
        "max_seq_length": model.max_seq_length,
        "chunks_per_s": statistics.median(rates),
        "passes": rates,
        "min_cosine_vs_runtime": float(cosines.min()),
    }
    with open(os.path.join(out_dir, "st_baseline.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"sentence-transformers {__version__} (torch {torch.__version__}, {threads} threads): "
          f"{result['chunks_per_s']:.1f} chunks/s; min cosine vs runtime "
          f"{result['min_cosine_vs_runtime']:.5f}")


if __name__ == "__main__":
    main()
