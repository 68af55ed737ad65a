"""llama.cpp baseline for the generation benchmark (scripts/bench-serve.sh).

    python llamacpp_baseline.py <model.gguf> <bench_out_dir> <threads>

Replays `prompt.json` (written by `cargo bench --bench serve -- generate`): the same prompt token
ids, the same number of new tokens, greedy, with EOS not stopping the run. Prefill is one
`eval` of the whole prompt plus picking the first token; decode is the remaining single-token
`eval`s, each followed by an argmax over the logits, which is what the Rust side times too.
Writes `llamacpp_baseline.json` and prints one line.
"""

import json
import os
import statistics
import sys
import time

import numpy as np
from llama_cpp import Llama, __version__


def main():
    gguf, out_dir, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(os.path.join(out_dir, "prompt.json")) as f:
        spec = json.load(f)
    prompt, new_tokens, runs = spec["prompt_ids"], spec["new_tokens"], spec["runs"]
    start = time.perf_counter()
    llm = Llama(model_path=gguf, n_ctx=2048, n_batch=512, n_threads=threads,
                n_threads_batch=threads, verbose=False)
    load_s = time.perf_counter() - start

    n_vocab = llm.n_vocab()

    def last_argmax():
        # Logits of the last evaluated position, straight from llama.cpp: llama-cpp-python only
        # copies them into `llm.scores` with logits_all=True, which would compute every row.
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))
        return int(np.argmax(logits))

    def generate(ids, n):
        llm.reset()
        c0, t0 = time.process_time(), time.perf_counter()
        llm.eval(ids)
        tok = last_argmax()
        prefill, prefill_cpu = time.perf_counter() - t0, time.process_time() - c0
        tokens = [tok]
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(n - 1):
            llm.eval([tok])
            tok = last_argmax()
            tokens.append(tok)
        decode, decode_cpu = time.perf_counter() - t0, time.process_time() - c0
        return prefill, decode, prefill_cpu, decode_cpu, tokens

    generate(prompt[:8], 2)
    prefill, decode, tokens = [], [], []
    prefill_cpu = decode_cpu = 0.0
    for _ in range(runs):
        p, d, pc, dc, tokens = generate(prompt, new_tokens)
        prefill.append(len(prompt) / p)
        decode.append((new_tokens - 1) / d)
        prefill_cpu += pc
        decode_cpu += dc
    result = {
        "llama_cpp_python": __version__,
        "threads": threads,
        "load_s": load_s,
        "prefill_tok_s": statistics.median(prefill),
        "decode_tok_s": statistics.median(decode),
        "prefill_tok_per_cpu_s": runs * len(prompt) / prefill_cpu,
        "decode_tok_per_cpu_s": runs * (new_tokens - 1) / decode_cpu,
        "prefill_runs": prefill,
        "decode_runs": decode,
        "tokens": tokens,
    }
    with open(os.path.join(out_dir, "llamacpp_baseline.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"llama.cpp (llama-cpp-python {__version__}, {threads} threads): prefill "
          f"{result['prefill_tok_s']:.1f} tok/s ({result['prefill_tok_per_cpu_s']:.1f} per CPU-s), "
          f"decode {result['decode_tok_s']:.1f} tok/s ({result['decode_tok_per_cpu_s']:.1f} per CPU-s)")


if __name__ == "__main__":
    main()
