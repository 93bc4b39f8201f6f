"""Make the real-engine suite's model on the controller: a tiny Llama base model and three LoRA adapters.

    GENERATOR_PYTHON tests/real_engine/make_model.py OUTDIR --base-on-host PATH

No model hub is reachable here, so everything is built from nothing (shared/notes/real-vllm-cpu.md):
- OUTDIR/base: LlamaForCausalLM, hidden 128, 2 layers, 4 heads / 2 KV heads (head_dim 32: the CPU attention's
  minimum), random weights (fixed seed), bf16 safetensors; a ByteLevel BPE tokenizer trained here with the
  `tokenizers` library, saved as a Hugging Face tokenizer with a chat_template;
- OUTDIR/adapters/<name>: peft LoRA adapters on q_proj/v_proj with init_lora_weights=False (random B, so their
  outputs differ from the base): easycontract r=8, checklist r=16, and wide r=32 (above the role's default
  vllm_server_max_lora_rank of 16: the adapter-rank check's case).
Each adapter's base_model_name_or_path is --base-on-host, the path the model is served from on the test host.
OUTDIR/manifest.json lists what was made. Runs with the generator venv (Python 3.11, CPU torch, transformers,
peft, tokenizers); deterministic for a given set of library versions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys

ADAPTERS = (("easycontract", 8), ("checklist", 16), ("wide", 32))
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
WORDS = ("contract clause party agree term payment notice breach liability warranty tenant landlord deposit "
         "rent month year checklist item done pending review sign date law court claim damage repair safety "
         "inspection fire exit light water gas permit owner worker hour wage leave the a of to and in is for on "
         "with as by at from this that be are was it not or an will shall may must any each all").split()


def corpus(lines=600, seed=7):
    rnd = random.Random(seed)
    out = []
    for _line in range(lines):
        out.append(" ".join(rnd.choice(WORDS) for _word in range(rnd.randint(6, 18))).capitalize() + ".")
    return out


def make_tokenizer(outdir):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", model_max_length=4096)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(outdir)
    return fast


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--base-on-host", required=True, help="the base model's path on the test host")
    a = ap.parse_args(argv)

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    tmp = a.outdir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    base_dir = os.path.join(tmp, "base")
    tokenizer = make_tokenizer(base_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(base_dir, safe_serialization=True)

    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Review the contract clause."}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        base_logits = model(**prompt).logits[0, -1].float()
    made = {"base": "base", "base_on_host": a.base_on_host, "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer), "adapters": {}}
    for i, (name, rank) in enumerate(ADAPTERS):
        torch.manual_seed(100 + i)
        fresh = LlamaForCausalLM.from_pretrained(base_dir, torch_dtype=torch.bfloat16)
        lora = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                          bias="none", task_type="CAUSAL_LM", init_lora_weights=False)
        peft_model = get_peft_model(fresh, lora)
        with torch.no_grad():
            logits = peft_model(**prompt).logits[0, -1].float()
        delta = float((logits - base_logits).abs().max())
        if delta < 1e-3:   # an adapter that changes nothing would prove nothing
            sys.exit("adapter %s does not change the base model's output (max logit delta %g)" % (name, delta))
        out = os.path.join(tmp, "adapters", name)
        peft_model.save_pretrained(out, safe_serialization=True)
        cfg_path = os.path.join(out, "adapter_config.json")
        with open(cfg_path) as fh:
            cfg = json.load(fh)
        cfg["base_model_name_or_path"] = a.base_on_host
        with open(cfg_path, "w") as fh:
            json.dump(cfg, fh, indent=2, sort_keys=True)
        made["adapters"][name] = {"r": rank, "target_modules": sorted(cfg["target_modules"]),
                                  "max_logit_delta": round(delta, 4)}
    import peft
    import tokenizers
    import transformers
    made["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                        "peft": peft.__version__, "tokenizers": tokenizers.__version__}
    with open(os.path.join(tmp, "manifest.json"), "w") as fh:
        json.dump(made, fh, indent=1, sort_keys=True)
    shutil.rmtree(a.outdir, ignore_errors=True)
    os.replace(tmp, a.outdir)
    print(json.dumps(made, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
