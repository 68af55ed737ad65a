"""Prints the serving benchmark's results side by side with the baselines, with ratios.

    python3 report.py <bench_out_dir>

Reads the JSON files `cargo bench --bench serve` and the baseline scripts wrote; a missing file
is reported as missing, not as zero. Standard library only.
"""

import json
import os
import sys


def load(out, name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def row(label, ours, theirs, unit, goal=None):
    if ours is None or theirs is None:
        print(f"  {label:<24} {'missing' if ours is None else f'{ours:10.1f}'} vs "
              f"{'missing' if theirs is None else f'{theirs:10.1f}'} {unit}")
        return
    ratio = ours / theirs
    verdict = "" if goal is None else ("  goal met" if ratio >= goal else f"  below goal {goal}x")
    print(f"  {label:<24} {ours:10.1f} vs {theirs:10.1f} {unit:<9} ratio {ratio:5.2f}x{verdict}")


def generation(out):
    gen, cpp = load(out, "generate.json"), load(out, "llamacpp_baseline.json")
    if not (gen or cpp):
        return
    print(f"Generation, SmolLM2-135M Q4_1 GGUF (ours as {gen and gen.get('precision', 'quantized')}, "
          f"llama.cpp on the file's Q4_1), {gen and gen['prompt_tokens']} prompt tokens, "
          f"{gen and gen['new_tokens']} new tokens, greedy, {gen and gen['threads']} threads — "
          f"ours vs llama.cpp (llama-cpp-python {cpp and cpp['llama_cpp_python']}, "
          f"{cpp and cpp['threads']} threads)")
    for phase in ("prefill", "decode"):
        row(f"{phase} (wall)", gen and gen[f"{phase}_tok_s"], cpp and cpp[f"{phase}_tok_s"],
            "tok/s", 1.0)
        row(f"{phase} (per CPU-s)", gen and gen[f"{phase}_tok_per_cpu_s"],
            cpp and cpp[f"{phase}_tok_per_cpu_s"], "tok/CPU-s")
    if gen and cpp:
        same = sum(a == b for a, b in zip(gen["tokens"], cpp["tokens"]))
        first_diff = next((i for i, (a, b) in enumerate(zip(gen["tokens"], cpp["tokens"]))
                           if a != b), None)
        print(f"  greedy tokens identical: {same}/{len(gen['tokens'])}"
              + ("" if first_diff is None else f" (first difference at token {first_diff})"))
    if gen:
        p = gen["decode_profile_ms"]
        print("  our decode step: " + ", ".join(f"{k} {v:.2f} ms" for k, v in p.items()))


def main():
    out = sys.argv[1]
    print("\n=== Serving benchmark summary (ours vs baseline; ratio > 1 means we are faster)")
    generation(out)
    if os.path.isdir(os.path.join(out, "t1")):
        generation(os.path.join(out, "t1"))
    emb, st = load(out, "embed.json"), load(out, "st_baseline.json")
    if emb or st:
        print(f"Embedding, all-MiniLM-L6-v2, {emb and emb['chunks']} chunks "
              f"(~{emb and round(emb['mean_tokens'])} tokens) — ours vs sentence-transformers "
              f"{st and st['sentence_transformers']}")
        row("chunks/s", emb and emb["chunks_per_s"], st and st["chunks_per_s"], "chunks/s", 1.5)
        if st:
            print(f"  min cosine between our and sentence-transformers vectors: "
                  f"{st['min_cosine_vs_runtime']:.5f}")
    ret = load(out, "retrieval.json")
    if ret:
        print(f"Retrieval, EdgeStore, synthetic clustered 384-d, {ret['queries']} queries, "
              f"top-{ret['top_k']}")
        for s in ret["sizes"]:
            e = s["exact"]
            print(f"  {s['points']:>7} points  exact p50 {e['p50_ms']:.2f} ms p99 {e['p99_ms']:.2f} ms"
                  f"  (HNSW build {s['build_s']:.0f} s)")
            for h in s["hnsw"]:
                print(f"           HNSW ef {h['ef']:<4} p50 {h['p50_ms']:.2f} ms p99 "
                      f"{h['p99_ms']:.2f} ms recall@10 {h['recall_at_10']:.3f}")
    prec = load(out, "precision.json")
    if prec:
        print("Weight precision (SmolLM2-135M; each in its own process)")
        for p in prec:
            print(f"  {p['mode']:>9}: load {p['load_s']:.2f} s, model RSS {p['rss_model_mib']:.0f} MiB,"
                  f" peak {p['rss_peak_mib']:.0f} MiB, prefill {p['prefill_tok_s_long_prompt']:.1f} tok/s"
                  f" ({p['prefill_tok_per_cpu_s_long_prompt']:.1f}/CPU-s), decode "
                  f"{p['decode_tok_s_mean']:.1f} tok/s ({p['decode_tok_per_cpu_s_mean']:.1f}/CPU-s),"
                  f" max |Δlogit| vs f32 "
                  f"{p['max_first_logit_diff_vs_f32']:.3f}, top-1 {p['top1_agree']}/{p['prompts']},"
                  f" same greedy answer {p['same_greedy_answer']}/{p['prompts']}")
    e2e = load(out, "e2e.json")
    if e2e:
        print(f"End to end, finance index ({e2e['chunks']} chunks), "
              f"{e2e.get('precision', 'quantized')} weights, median of {e2e['questions']} questions")
        for r in e2e["rows"]:
            print(f"  top-k {r['top_k']:>2}: {r['prompt_tokens']:.0f} prompt tokens, embed "
                  f"{r['embed_ms']:.1f} + retrieve {r['retrieve_ms']:.2f} + prompt "
                  f"{r['prompt_ms']:.1f} + prefill {r['prefill_ms']:.0f} = first token "
                  f"{r['ttft_ms']:.0f} ms; decode {r['decode_tokens']} tokens {r['decode_ms']:.0f} ms")
        rows = {r["top_k"]: r for r in e2e["rows"]}
        if 4 in rows and 12 in rows:
            k4, k12 = rows[4], rows[12]
            print(f"  top-k 12 vs 4: {k12['prompt_tokens'] / k4['prompt_tokens']:.1f}x the prompt "
                  f"tokens, {k12['prefill_ms'] / k4['prefill_ms']:.1f}x the prefill, "
                  f"{k12['ttft_ms'] / k4['ttft_ms']:.1f}x the time to first token")


if __name__ == "__main__":
    main()
