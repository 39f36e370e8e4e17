"""Writes the golden files the C++ tests compare against: tiny random Llama models from
Hugging Face transformers, saved with save_pretrained, plus their inputs, logits, loss and
gradients (fp32), and the logits at shifted positions. Run: $MESHTRAIN_VENV/bin/python scripts/make_golden.py  (writes tests/golden/).
"""
import json
import os

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden")

BASE = dict(vocab_size=64, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=12, rms_norm_eps=1e-6,
            max_position_embeddings=128)
VARIANTS = {
    # GQA, head_dim 12 (not a power of two), default RoPE.
    "llama": dict(BASE, rope_theta=10000.0),
    # Tied embeddings, biases, llama3 RoPE scaling, head_dim != hidden / heads.
    "llama-tied-llama3": dict(BASE, tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
                              head_dim=16, rope_theta=500000.0,
                              rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                            "original_max_position_embeddings": 8}),
    # Linear RoPE scaling, multi-head attention (no GQA).
    "llama-linear": dict(BASE, num_key_value_heads=4, rope_theta=10000.0,
                         rope_scaling={"rope_type": "linear", "factor": 2.0}),
}


def random_model_and_batch(name, config, model_cls, seed):
    """Saves a model of config with large random weights to OUT/name and runs one batch with
    ignored targets through it, backward included. Returns the model, its output, the golden
    tensors (inputs, labels, logits, loss, logits at positions 40..) and the directory."""
    torch.manual_seed(seed)
    config._attn_implementation = "eager"
    model = model_cls(config).float()
    # Larger weights than the 0.02 init, so logits (and routing) are far from uniform and errors show.
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.25)
    out_dir = os.path.join(OUT, name)
    model.save_pretrained(out_dir)
    os.remove(os.path.join(out_dir, "generation_config.json"))

    batch, seq = 2, 24
    input_ids = torch.randint(0, config.vocab_size, (batch, seq))
    labels = input_ids.clone()
    labels[0, 5:9] = -100  # ignored targets
    labels[1, -1] = -100
    out = model(input_ids=input_ids, labels=labels)
    out.loss.backward()
    tensors = {"input_ids": input_ids, "labels": labels,
               "logits": out.logits.detach().contiguous(), "loss": out.loss.detach().reshape(1)}
    # The same rows at positions 40.. (as a sequence shard of a longer sequence sees them).
    position_ids = torch.arange(40, 40 + seq).expand(batch, seq).contiguous()
    with torch.no_grad():
        tensors["offset_position_ids"] = position_ids
        tensors["offset_logits"] = model(input_ids=input_ids, position_ids=position_ids).logits.contiguous()
    return model, out, tensors, out_dir


def make(name, fields, seed):
    model, out, tensors, out_dir = random_model_and_batch(name, LlamaConfig(**fields), LlamaForCausalLM, seed)
    for pname, p in model.named_parameters():
        tensors["grad." + pname] = p.grad.contiguous()
    save_file(tensors, os.path.join(out_dir, "golden.safetensors"))
    print(name, "loss", out.loss.item())


if __name__ == "__main__":
    for i, (name, fields) in enumerate(VARIANTS.items()):
        make(name, fields, seed=i)
