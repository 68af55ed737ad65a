"""Loads a Rust-written PEFT adapter with Hugging Face PEFT and compares logits.

    python compare.py <model.gguf> <adapter_dir> <rust_logits.safetensors> [<hf_out_dir>]

The Hugging Face base model is rebuilt from the GGUF file: every tensor dequantized with the
`gguf` package, q/k rows put back in Hugging Face order (llama.cpp interleaves them for RoPE),
loaded into a `LlamaForCausalLM` whose config is read from the GGUF metadata. Nothing is
downloaded. `rust_logits.safetensors` holds `input_ids` (1, T) and the Rust logits `base`
(T, V) and `adapted` (T, V). Prints one JSON object with the differences. With `hf_out_dir`,
the rebuilt Hugging Face base model is also saved there (config.json + model.safetensors), so the
Rust side can check its own safetensors loader against it.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from gguf import GGUFReader  # noqa: E402
from gguf.quants import dequantize  # noqa: E402
from peft import PeftModel  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402


def field(reader, key):
    f = reader.fields[key]
    value = f.parts[f.data[0]]
    if f.types and f.types[0].name == "STRING":
        return bytes(value).decode()
    return value.tolist()[0]


def unpermute(w, heads):
    """llama.cpp row order (adjacent RoPE pairs) back to Hugging Face order (halves)."""
    rows, cols = w.shape
    return w.reshape(heads, rows // heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def hf_model(path):
    reader = GGUFReader(path)
    arch = field(reader, "general.architecture")
    heads = field(reader, f"{arch}.attention.head_count")
    kv_heads = field(reader, f"{arch}.attention.head_count_kv")
    tensors = {}
    for t in reader.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        tensors[t.name] = w.reshape(tuple(reversed([int(d) for d in t.shape])))
    vocab, hidden = tensors["token_embd.weight"].shape
    layers = field(reader, f"{arch}.block_count")
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=field(reader, f"{arch}.feed_forward_length"),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        rms_norm_eps=field(reader, f"{arch}.attention.layer_norm_rms_epsilon"),
        rope_theta=field(reader, f"{arch}.rope.freq_base"),
        max_position_embeddings=field(reader, f"{arch}.context_length"),
        tie_word_embeddings="output.weight" not in tensors,
        attn_implementation="eager",
    )
    names = {
        "attn_norm": "input_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_norm": "post_attention_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    state = {
        "model.embed_tokens.weight": tensors["token_embd.weight"],
        "model.norm.weight": tensors["output_norm.weight"],
        "lm_head.weight": tensors.get("output.weight", tensors["token_embd.weight"]),
    }
    for i in range(layers):
        for gguf_name, hf_name in names.items():
            w = tensors[f"blk.{i}.{gguf_name}.weight"]
            if gguf_name == "attn_q":
                w = unpermute(w, heads)
            elif gguf_name == "attn_k":
                w = unpermute(w, kv_heads)
            state[f"model.layers.{i}.{hf_name}.weight"] = w
    model = LlamaForCausalLM(config).to(torch.float32)
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=True)
    return model.eval()


def main():
    gguf_path, adapter_dir, logits_path = sys.argv[1:4]
    torch.manual_seed(0)
    rust = load_file(logits_path)
    ids = torch.from_numpy(rust["input_ids"].astype(np.int64))
    model = hf_model(gguf_path)
    if len(sys.argv) > 4:
        model.save_pretrained(sys.argv[4], safe_serialization=True)
    with torch.no_grad():
        base = model(ids).logits[0].float().numpy()
        peft_model = PeftModel.from_pretrained(model, adapter_dir).eval()
        adapted = peft_model(ids).logits[0].float().numpy()
    report = {
        "base_max_abs_diff": float(np.abs(base - rust["base"]).max()),
        "adapted_max_abs_diff": float(np.abs(adapted - rust["adapted"]).max()),
        "adapter_effect": float(np.abs(adapted - base).max()),
        "argmax_agree": bool((adapted.argmax(-1) == rust["adapted"].argmax(-1)).all()),
        "lora_modules": sorted({n.split(".")[-1] for n, _ in peft_model.named_modules() if n.endswith("_proj") and hasattr(_, "lora_A")}),
        "torch": torch.__version__,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
