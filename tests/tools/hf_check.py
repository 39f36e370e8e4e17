"""What Hugging Face transformers makes of meshtrain's files; the C++ tests compare its output.
  hf_check.py eval DIR DATA.txt SEQ     -> hf_eval_loss: token-weighted loss over consecutive windows
  hf_check.py golden DIR GOLDEN         -> max_abs_logit_diff of DIR's model on GOLDEN's inputs
  hf_check.py params CONFIG_DIR         -> parameters: count of LlamaForCausalLM(config)
"""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402
from transformers.utils import logging  # noqa: E402

logging.set_verbosity_error()


def load(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def main(mode, *args):
    if mode == "eval":
        path, data, seq = args[0], args[1], int(args[2])
        tokens = torch.tensor(list(open(data, "rb").read()), dtype=torch.long)
        windows = tokens[: len(tokens) // seq * seq].view(-1, seq)
        model = load(path)
        with torch.no_grad():
            logits = model(input_ids=windows).logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), windows[:, 1:].reshape(-1), reduction="mean")
        print(f"hf_eval_loss: {loss.item():.8f}")
    elif mode == "golden":
        model = load(args[0])
        golden = load_file(args[1])
        with torch.no_grad():
            logits = model(input_ids=golden["input_ids"]).logits
        print(f"max_abs_logit_diff: {(logits - golden['logits']).abs().max().item():.3e}")
    elif mode == "params":
        config = AutoConfig.from_pretrained(args[0])
        model = AutoModelForCausalLM.from_config(config)
        print(f"parameters: {sum(p.numel() for p in model.parameters())}")
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(*sys.argv[1:])
