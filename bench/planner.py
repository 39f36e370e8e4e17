"""The planner against measurement: for each layout, `meshtrain plan --json` (rank 0's predicted
peak memory and bytes per mesh dim) next to what rank 0 measured training the same layout for
--steps steps (peak_memory_mib and bytes_sent_per_step of the last row of metrics.jsonl).
Prints a markdown table: predicted / measured peak and the worst per-dim bytes ratio.

Run: python3 bench/planner.py [--config configs/llama-small] [--seq 512] [--batch 4] [--only NAME]
Standard library only; temporary directories are removed.
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.path.join(ROOT, "build", "meshtrain")

DENSE = [
    ("one rank", 1, ""),
    ("one rank, checkpointed", 1, "--gradient_checkpointing"),
    ("DDP 2", 2, "--dp_replicate_size 2"),
    ("FSDP 2", 2, "--dp_shard_size 2"),
    ("tp 2", 2, "--tp_size 2"),
    ("tp 2 + sp", 2, "--tp_size 2 --sequence_parallel"),
    ("cp 2", 2, "--cp_size 2"),
    ("FSDP 2 x tp 2", 4, "--dp_shard_size 2 --tp_size 2"),
    ("pp 2, 1F1B, 4 micro-batches", 2, "--pp_size 2 --gradient_accumulation_steps 4"),
    ("pp 2, GPipe, 4 micro-batches", 2, "--pp_size 2 --gradient_accumulation_steps 4 --pipeline_parallel_schedule GPipe"),
    ("pp 2 x V 2, Interleaved1F1B, 4 micro-batches", 2,
     "--pp_size 2 --pp_virtual_stages 2 --pipeline_parallel_schedule Interleaved1F1B --gradient_accumulation_steps 4"),
    ("pp 2 x FSDP 2, 2 micro-batches", 4, "--pp_size 2 --dp_shard_size 2 --gradient_accumulation_steps 2"),
]
MOE = [
    ("MoE one rank", 1, ""),
    ("MoE FSDP 2 x ep 2 (all-to-all)", 2, "--dp_shard_size 2 --ep_size 2"),
    ("MoE tp 2 x ep 2 (router masking)", 2, "--tp_size 2 --ep_size 2 --ep_mode allreduce"),
]


def run(args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def measure(config, world, flags, shape, steps, out):
    plan = json.loads(run([BIN, "plan", "--json", "--world", str(world), "--config_name", config] + shape + flags))
    run([BIN, "launch", "-n", str(world), "--", "train", "--config_name", config,
         "--data", os.path.join(ROOT, "data", "corpus.txt"), "--max_steps", str(steps), "--logging_steps", "1",
         "--save_steps", "0", "--output_dir", out] + shape + flags)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        last = [json.loads(line) for line in f][-1]
    predicted_mib = plan["memory"]["peak"] / 2**20
    ratios = {dim: plan["bytes_sent_per_step"].get(dim, 0) / sent for dim, sent in last.get("bytes_sent_per_step", {}).items()}
    missing = [dim for dim in plan["bytes_sent_per_step"] if dim not in ratios]
    return predicted_mib, last["peak_memory_mib"], ratios, missing, plan


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/llama-small")
    ap.add_argument("--moe_config", default="configs/mixtral-tiny")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--only", default="", help="run only the layouts whose name contains this")
    a = ap.parse_args()
    shape = ["--seq_len", str(a.seq), "--per_device_train_batch_size", str(a.batch)]
    print(f"| layout | ranks | predicted peak MiB | measured peak MiB | ratio | bytes/step per dim: predicted / measured |")
    print("|---|---|---|---|---|---|")
    tmp = tempfile.mkdtemp(prefix="mt_planner_")
    try:
        for config, layouts in ((a.config, DENSE), (a.moe_config, MOE)):
            config = os.path.join(ROOT, config)
            for i, (name, world, flags) in enumerate(layouts):
                if a.only not in name:
                    continue
                out = os.path.join(tmp, f"{os.path.basename(config)}_{i}")
                pred, meas, ratios, missing, plan = measure(config, world, flags.split(), shape, a.steps, out)
                dims = ", ".join(f"{d} {r:.4f}" for d, r in sorted(ratios.items())) or "none"
                if missing:
                    dims += "; predicted but not sent: " + ", ".join(missing)
                if plan["estimated"]:
                    dims += " (ep: expectation under even routing)"
                print(f"| {os.path.basename(config)} {name} | {world} | {pred:.2f} | {meas:.2f} | {pred / meas:.3f} | {dims} |",
                      flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
