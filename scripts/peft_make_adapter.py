"""Hugging Face PEFT creates a LoRA adapter on SmolLM2 and writes reference logits.

    python peft_make_adapter.py <model.gguf> <adapter_out_dir> <logits_out.safetensors> <ids>

<ids> are the prompt's token ids, comma-separated (the Rust test tokenizes, so both sides see
the same input). The base model is loaded by transformers itself from the GGUF file
(`gguf_file=`), which dequantizes the weights and puts the q/k rows back in Hugging Face order,
independently of this repository's code. PEFT wraps it with a rank-8 LoRA on every projection;
lora_B is drawn at random (seeded) instead of PEFT's zero init, so the adapter changes the
output. The adapter is saved with `save_pretrained`; the logits file holds `input_ids` (1, T),
`base` and `adapted` (T, V), in f32. Runs on CPU; nothing is downloaded (HF_HUB_OFFLINE).
Prints one JSON line with what it made.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SEED = 20260511
B_RANGE = 0.01


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    gguf_path, adapter_dir, logits_path, ids_arg = sys.argv[1:5]
    ids = torch.tensor([[int(t) for t in ids_arg.split(",")]], dtype=torch.long)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(gguf_path)),
        gguf_file=os.path.basename(gguf_path),
        torch_dtype=torch.float32,
        attn_implementation="eager",
    ).eval()
    with torch.no_grad():
        base = model(ids).logits[0].float()
    config = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config).eval()
    generator = torch.Generator().manual_seed(SEED)
    modules = set()
    with torch.no_grad():
        for name, module in peft_model.named_modules():
            if hasattr(module, "lora_B") and "default" in module.lora_B:
                w = module.lora_B["default"].weight
                w.copy_((torch.rand(w.shape, generator=generator) * 2 - 1) * B_RANGE)
                modules.add(name.split(".")[-1])
        adapted = peft_model(ids).logits[0].float()
    peft_model.save_pretrained(adapter_dir, safe_serialization=True)
    save_file(
        {"input_ids": ids.to(torch.int64).contiguous(), "base": base.contiguous(),
         "adapted": adapted.contiguous()},
        logits_path,
    )
    print(json.dumps({
        "lora_modules": sorted(modules),
        "adapter_effect": float((adapted - base).abs().max()),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
