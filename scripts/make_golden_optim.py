"""Writes tests/golden/optim/: what the C++ optimizer and schedule tests compare against.
  adamw.safetensors  torch.optim.AdamW over several steps with a fresh random gradient each step,
                     a learning rate that changes every step, weight decay on HF Trainer's decay
                     group only, and a parameter without a gradient on one step (torch skips it)
  schedules.json     transformers.get_scheduler's multiplier at every step, per scheduler type
  decay.json         the parameters HF Trainer decays (get_decay_parameter_names), for every
                     parameter of a Llama (with biases) and a Qwen3-MoE (q/k norms, experts)
Run: $MESHTRAIN_VENV/bin/python scripts/make_golden_optim.py
"""
import json
import os

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM, Trainer, get_scheduler

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "optim")

BETAS, EPS, WEIGHT_DECAY, STEPS = (0.8, 0.95), 1e-6, 0.1, 6
# Parameters by HF name -> (shape, decays): HF Trainer's groups (decay.json checks the rule).
PARAMS = {
    "model.layers.0.mlp.up_proj.weight": ((5, 3), True),
    "model.layers.0.self_attn.q_proj.bias": ((4,), False),
    "model.layers.0.input_layernorm.weight": ((3,), False),
    "model.layers.1.mlp.experts.gate_up_proj": ((2, 4, 3), True),
}
SKIPPED = ("model.layers.0.self_attn.q_proj.bias", 2)  # no gradient on step 2 (0-based)


def decay_names(model):
    return set(Trainer.get_decay_parameter_names(None, model))


def adamw():
    torch.manual_seed(0)
    params = {n: torch.nn.Parameter(torch.randn(shape)) for n, (shape, _) in PARAMS.items()}
    groups = [{"params": [params[n] for n, (_, d) in PARAMS.items() if d], "weight_decay": WEIGHT_DECAY},
              {"params": [params[n] for n, (_, d) in PARAMS.items() if not d], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1.0, betas=BETAS, eps=EPS)
    golden = {f"init.{n}": p.detach().clone() for n, p in params.items()}
    lrs = []
    for step in range(STEPS):
        lr = 1e-2 * (1 + step) / (1 + 0.5 * step * step)
        lrs.append(lr)
        for g in opt.param_groups:
            g["lr"] = lr
        for n, p in params.items():
            # Gradients of different scale and sign every step: averages that depend on both betas.
            p.grad = None if (n, step) == SKIPPED else torch.randn_like(p) * (0.1 + step)
            if p.grad is not None:
                golden[f"grad.{step}.{n}"] = p.grad.clone()
        opt.step()
        for n, p in params.items():
            golden[f"after.{step}.{n}"] = p.detach().clone()
    golden["lr"] = torch.tensor(lrs, dtype=torch.float64)
    golden["options"] = torch.tensor([*BETAS, EPS, WEIGHT_DECAY], dtype=torch.float64)
    return golden


def schedules():
    out = []
    for name in ["linear", "cosine", "constant", "constant_with_warmup"]:
        for warmup, total in [(0, 7), (3, 11), (5, 5)]:
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
            sched = get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=total)
            multipliers = []
            for _ in range(total + 1):  # the rate used by optimizer steps 0..total
                multipliers.append(sched.get_last_lr()[0])
                opt.step()
                sched.step()
            out.append({"type": name, "warmup": warmup, "total": total, "multipliers": multipliers})
    return out


def tiny_models():
    common = dict(vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=8)
    return {
        "llama": LlamaForCausalLM(LlamaConfig(intermediate_size=24, attention_bias=True, mlp_bias=True, **common)),
        "qwen3_moe": Qwen3MoeForCausalLM(Qwen3MoeConfig(intermediate_size=24, moe_intermediate_size=8, num_experts=2,
                                                        num_experts_per_tok=1, decoder_sparse_step=2, **common)),
    }


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    decay = {kind: {n: n in decay_names(m) for n, _ in m.named_parameters()} for kind, m in tiny_models().items()}
    with open(os.path.join(OUT, "decay.json"), "w") as f:
        json.dump(decay, f, indent=1, sort_keys=True)
    save_file(adamw(), os.path.join(OUT, "adamw.safetensors"))
    with open(os.path.join(OUT, "schedules.json"), "w") as f:
        json.dump(schedules(), f, indent=1)
    print("wrote", OUT)
