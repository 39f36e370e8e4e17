"""Writes the MoE golden files the C++ tests compare against: tiny random Mixtral and Qwen3-MoE
models from Hugging Face transformers, saved with save_pretrained (per-expert tensors), plus
their inputs, logits, the loss with the router auxiliary loss, every gradient under the
in-memory (fused) parameter names, and the logits at shifted positions (fp32).
Run: $MESHTRAIN_VENV/bin/python scripts/make_golden_moe.py  (writes tests/golden/).
"""
import os

from safetensors.torch import save_file
from transformers import MixtralConfig, MixtralForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

from make_golden import random_model_and_batch

BASE = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=128,
            num_experts_per_tok=2, output_router_logits=True, router_aux_loss_coef=0.1)
VARIANTS = {
    # Every layer sparse, renormalised top-2 weights, per-expert w1/w2/w3 checkpoint names.
    "mixtral": (MixtralConfig, MixtralForCausalLM,
                dict(BASE, intermediate_size=32, num_local_experts=4)),
    # q_norm/k_norm, attention biases, layer 0 dense (decoder_sparse_step 2), top-k weights not
    # renormalised, head_dim != hidden / heads.
    "qwen3-moe": (Qwen3MoeConfig, Qwen3MoeForCausalLM,
                  dict(BASE, intermediate_size=48, moe_intermediate_size=32, num_experts=4,
                       decoder_sparse_step=2, norm_topk_prob=False, attention_bias=True, head_dim=12)),
}
def make(name, config_cls, model_cls, fields, seed):
    model, out, tensors, out_dir = random_model_and_batch(name, config_cls(**fields), model_cls, seed)
    tensors["aux_loss"] = out.aux_loss.detach().reshape(1)
    for pname, p in model.named_parameters():
        tensors["grad." + pname] = p.grad.contiguous()
    save_file(tensors, os.path.join(out_dir, "golden.safetensors"))
    print(name, "loss", out.loss.item(), "aux", out.aux_loss.item(),
          "grads", sum(k.startswith("grad.") for k in tensors))


if __name__ == "__main__":
    for i, (name, (config_cls, model_cls, fields)) in enumerate(VARIANTS.items()):
        make(name, config_cls, model_cls, fields, seed=10 + i)
