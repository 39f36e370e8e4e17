"""Writes tests/golden/llama/packed.safetensors: a packed batch (documents side by side in each
row, position_ids restarting at every document, the first label of each document ignored, as
DataCollatorWithFlattening makes it) through the golden Llama of make_golden.py, with the
logits, loss and gradients of transformers' packed forward, and the loss of the same documents
run one at a time. Run after make_golden.py: $MESHTRAIN_VENV/bin/python scripts/make_golden_packed.py
"""
import os

import torch
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

DIR = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "llama")
LENGTHS = [[7, 10, 7], [5, 1, 18]]  # two rows of 24 tokens


def main():
    torch.manual_seed(100)
    model = LlamaForCausalLM.from_pretrained(DIR, attn_implementation="eager").float()
    vocab = model.config.vocab_size
    rows = [torch.randint(0, vocab, (sum(lengths),)) for lengths in LENGTHS]
    input_ids = torch.stack(rows)
    position_ids = torch.stack([torch.cat([torch.arange(n) for n in lengths]) for lengths in LENGTHS])
    labels = input_ids.clone()
    labels[position_ids == 0] = -100  # no document predicts the next one's first token

    # use_cache=False as in training: with a cache, transformers does not look for packed rows.
    out = model(input_ids=input_ids, position_ids=position_ids, labels=labels, use_cache=False)
    out.loss.backward()
    tensors = {"input_ids": input_ids, "position_ids": position_ids, "labels": labels,
               "logits": out.logits.detach().contiguous(), "loss": out.loss.detach().reshape(1)}
    for name, p in model.named_parameters():
        tensors["grad." + name] = p.grad.contiguous()

    # One document at a time: the token-weighted mean over all of them.
    loss_sum, count = 0.0, 0
    with torch.no_grad():
        for r, lengths in enumerate(LENGTHS):
            start = 0
            for n in lengths:
                ids = input_ids[r:r + 1, start:start + n]
                logits = model(input_ids=ids).logits[0, :-1]
                if n > 1:
                    loss_sum += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
                    count += n - 1
                start += n
    per_document = loss_sum / count
    assert abs(per_document - out.loss.item()) < 1e-5 * out.loss.item(), (per_document, out.loss.item())
    tensors["loss_per_document"] = torch.tensor([per_document], dtype=torch.float64)
    save_file(tensors, os.path.join(DIR, "packed.safetensors"))
    print("packed loss", out.loss.item(), "one document at a time", per_document)


if __name__ == "__main__":
    main()
