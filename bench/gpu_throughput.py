"""One-GPU training throughput: meshtrain against Hugging Face transformers, same GPU, same run.

A Llama-3.2-1B-shaped model (hidden 2048, 16 layers, 32 query / 8 KV heads, intermediate 8192,
vocab 128256, tied embeddings), fresh weights, bf16 mixed precision, one sequence of 4096 tokens
per step, AdamW (fp32 state, lr 1e-4 constant), grad-norm clip 1.0, uniform random tokens:
  meshtrain  build-gpu/meshtrain train --device cuda --bf16 ... (per-step tokens_per_s and
             peak_memory_mib from metrics.jsonl)
  HF         LlamaForCausalLM, sdpa attention, torch.autocast(bfloat16), torch.optim.AdamW
             (its default foreach kernels), eager, in this process; each step timed between
             torch.cuda.synchronize() calls, loss.item() included
The first --warmup steps of each side are dropped; the median step counts.
MFU = tokens/s * flops_per_token / peak, flops_per_token = 6 * N_matmul + 12 * L * T * H * d
(N_matmul: every matmul weight, the tied LM head once, no embedding lookup; the attention term
counts the whole T x T score matrix, as PaLM's appendix and `meshtrain info` do). The peak is
the datasheet's dense bf16 rate where the GPU is known (H100/H200 SXM: 989 TFLOP/s) and, beside
it, the rate of an 8192^3 bf16 torch.matmul measured here (mean of 10 after 3 warm-ups).
Goal (issue 13): meshtrain >= 1.2x HF tokens/s and >= 45% MFU against the dense bf16 peak.

--cpu-smoke runs the same logic on the CPU with configs/llama-tiny, seq 64, 3 steps, to check
the script where there is no GPU. Nothing is downloaded; temporary files are removed.

Run: python3 bench/gpu_throughput.py [--meshtrain build-gpu/meshtrain] [--json OUT] [--markdown OUT]
"""
import argparse
import gc
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

CONFIG_1B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
    "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
    "max_position_embeddings": 8192, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "rope_scaling": None,  # Llama-3.2's llama3 scaling changes no FLOPs; plain RoPE keeps both sides simple
    "tie_word_embeddings": True, "attention_bias": False, "mlp_bias": False, "hidden_act": "silu",
    "initializer_range": 0.02, "bos_token_id": 128000, "eos_token_id": 128001, "pad_token_id": None,
    "torch_dtype": "float32",
}

# Dense (no sparsity) bf16 tensor-core peak by the vendor's datasheet, TFLOP/s.
DATASHEET_BF16 = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0),
                  ("H800", 989.0), ("A100", 312.0)]
LR = 1e-4


def flops_per_token(c, seq):
    D, L, V, I = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"], c["intermediate_size"]
    H, Hkv = c["num_attention_heads"], c["num_key_value_heads"]
    d = c.get("head_dim") or D // H
    n_matmul = V * D + L * (2 * D * H * d + 2 * D * Hkv * d + 3 * D * I)
    return 6 * n_matmul + 12 * L * seq * H * d, n_matmul


def num_parameters(c):
    D, L, V, I = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"], c["intermediate_size"]
    H, Hkv = c["num_attention_heads"], c["num_key_value_heads"]
    d = c.get("head_dim") or D // H
    per_layer = 2 * D * H * d + 2 * D * Hkv * d + 3 * D * I + 2 * D
    return V * D * (1 if c["tie_word_embeddings"] else 2) + D + L * per_layer


def count(n):
    return f"{n / 1e9:.3f} B" if n >= 1e9 else f"{n / 1e6:.2f} M"


def datasheet_peak(name):
    for key, tflops in DATASHEET_BF16:
        if key in name:
            return tflops * 1e12
    return None


def sync(device):
    import torch
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_rate(device, n, dtype_name="bfloat16", warmup=3, repeats=10):
    """FLOP/s of an n^3 matmul: mean of `repeats` after `warmup`."""
    import torch
    dtype = getattr(torch, dtype_name)
    with torch.no_grad():
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(warmup):
            torch.matmul(a, b)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(a, b)
        sync(device)
        seconds = (time.perf_counter() - t0) / repeats
    del a, b
    return 2.0 * n ** 3 / seconds


# ----------------------------------------------------------------------------- meshtrain
def train_flags(binary):
    out = subprocess.run([binary, "train", "--help"], capture_output=True, text=True, cwd=ROOT)
    return out.stdout + out.stderr


def run_meshtrain(binary, cfg, data, args, device, log_path):
    supports_device = re.search(r"--device\b(?!_)", train_flags(binary)) is not None
    if device == "cuda" and not supports_device:
        return {"skipped": "this meshtrain has no --device flag: it would train on the CPU"}
    with tempfile.TemporaryDirectory(prefix="gpu_bench_mt_") as tmp:
        out_dir = os.path.join(tmp, "run")
        cmd = [binary, "train", "--config_name", cfg, "--data", data, "--seq_len", str(args.seq),
               "--per_device_train_batch_size", str(args.batch), "--max_steps", str(args.warmup + args.steps),
               "--logging_steps", "1", "--save_steps", "0", "--save_dtype", "bfloat16",
               "--learning_rate", str(LR), "--warmup_steps", "0", "--lr_scheduler_type", "constant",
               "--max_grad_norm", "1.0", "--seed", "42", "--report_to", "none", "--output_dir", out_dir]
        if args.bf16:
            cmd.append("--bf16")
        if supports_device:
            cmd += ["--device", device]
        cmd += args.meshtrain_arg
        t0 = time.perf_counter()
        with open(log_path, "a") as log:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            try:
                proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                      timeout=args.meshtrain_timeout)
            except subprocess.TimeoutExpired:
                return {"error": f"timed out after {args.meshtrain_timeout} s", "command": cmd}
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            with open(log_path) as f:
                tail = f.read()[-2000:]
            return {"error": f"exit status {proc.returncode}", "command": cmd, "log_tail": tail}
        with open(os.path.join(out_dir, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    rows = [r for r in rows if "tokens_per_s" in r]
    timed = [r for r in rows if r["step"] > args.warmup] or rows
    tps = [r["tokens_per_s"] for r in timed]
    peak = [r["peak_memory_mib"] for r in rows if "peak_memory_mib" in r]
    return {"tokens_per_s": statistics.median(tps), "steps_tokens_per_s": tps,
            "mfu_self": statistics.median([r["mfu"] for r in timed]) if timed else None,
            "peak_memory_gib": max(peak) / 1024 if peak else None,
            "first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"], "wall_s": wall,
            "device_flag": supports_device, "command": cmd}


# ----------------------------------------------------------------------------- HF
def run_hf(cfg_path, tokens, args, device):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(42)
    config = LlamaConfig.from_json_file(cfg_path)
    config._attn_implementation = "sdpa"
    t0 = time.perf_counter()
    with torch.device(device):  # initialised in place: a 1B model's CPU init would take longer than the run
        model = LlamaForCausalLM(config).float().train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR)
    init_s = time.perf_counter() - t0
    data = torch.from_numpy(tokens.astype("int64"))
    gen = torch.Generator().manual_seed(42)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        starts = torch.randint(0, data.numel() - args.seq, (args.batch,), generator=gen)
        ids = torch.stack([data[s:s + args.seq] for s in starts.tolist()]).to(device)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=args.bf16):
            out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.item()

    times, losses = [], []
    for _ in range(args.warmup + args.steps):
        sync(device)
        t = time.perf_counter()
        losses.append(step())
        sync(device)
        times.append(time.perf_counter() - t)
    timed = times[args.warmup:] or times
    tps = [args.batch * args.seq / s for s in timed]
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else None
    del model, opt, params
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"tokens_per_s": statistics.median(tps), "steps_tokens_per_s": tps, "peak_memory_gib": peak,
            "first_loss": losses[0], "last_loss": losses[-1], "init_s": init_s,
            "attn_implementation": config._attn_implementation, "optimizer": "torch.optim.AdamW (foreach)"}


# ----------------------------------------------------------------------------- report
def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def table(res):
    fpt, peaks = res["flops_per_token"], res["peaks"]
    cols = [(label, rate) for label, rate in peaks if rate]
    head = "| | tokens/s | ms/step | " + " | ".join(f"MFU vs {label}" for label, _ in cols) + \
           " | peak memory GiB | loss first → last |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for name in ("meshtrain", "hf"):
        r = res[name]
        label = "meshtrain" if name == "meshtrain" else "HF transformers"
        if "tokens_per_s" not in r:
            why = r.get("skipped") or r.get("error") or "not run"
            lines.append(f"| {label} | {why} |" + " |" * (len(cols) + 3))
            continue
        tps = r["tokens_per_s"]
        mfus = " | ".join(f"{100 * tps * fpt / rate:.1f}%" for _, rate in cols)
        ms = 1000 * res["batch"] * res["seq"] / tps
        lines.append(f"| {label} | {tps:,.0f} | {ms:.1f} | {mfus} | {fmt(r['peak_memory_gib'], '.1f')} | "
                     f"{r['first_loss']:.3f} → {r['last_loss']:.3f} |")
    return "\n".join(lines)


def verdict(res):
    mt, hf = res["meshtrain"], res["hf"]
    if "tokens_per_s" not in mt or "tokens_per_s" not in hf:
        return "goal not checked: a side did not run"
    ratio = mt["tokens_per_s"] / hf["tokens_per_s"]
    peak = next((rate for label, rate in res["peaks"] if rate and label.startswith("datasheet")), None)
    peak = peak or next((rate for _, rate in res["peaks"] if rate), None)
    mfu = mt["tokens_per_s"] * res["flops_per_token"] / peak
    ok = ratio >= 1.2 and mfu >= 0.45
    return (f"meshtrain / HF = {ratio:.2f}x (goal >= 1.2x), MFU {100 * mfu:.1f}% (goal >= 45%): "
            + ("goal met" if ok else "goal not met"))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--meshtrain", default=os.path.join(ROOT, "build-gpu", "meshtrain"))
    p.add_argument("--steps", type=int, default=8, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=3, help="steps dropped first")
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--no-bf16", dest="bf16", action="store_false")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="CPU, configs/llama-tiny, seq 64, 1 + 2 steps: checks the script without a GPU")
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--skip-meshtrain", action="store_true")
    p.add_argument("--meshtrain-timeout", type=float, default=150)
    p.add_argument("--meshtrain-arg", action="append", default=[], help="extra flag for meshtrain train")
    p.add_argument("--log", default=None, help="meshtrain's output goes here (default: a temporary file)")
    p.add_argument("--json", help="write all results here")
    p.add_argument("--markdown", help="write the table here")
    args = p.parse_args()

    import numpy as np
    import torch
    import transformers

    if args.cpu_smoke:
        device = "cpu"
        args.seq, args.batch, args.steps, args.warmup = 64, 2, 2, 1
        with open(os.path.join(ROOT, "configs", "llama-tiny", "config.json")) as f:
            config = json.load(f)
    else:
        if not torch.cuda.is_available():
            print("gpu_throughput: no CUDA device visible (torch.cuda.is_available() is False); "
                  "use --cpu-smoke to check the script on the CPU", file=sys.stderr)
            return 3
        device = "cuda"
        config = dict(CONFIG_1B)

    fpt, n_matmul = flops_per_token(config, args.seq)
    res = {"device": device, "seq": args.seq, "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
           "bf16": args.bf16, "config": config, "flops_per_token": fpt, "n_matmul": n_matmul,
           "n_parameters": num_parameters(config), "torch": torch.__version__,
           "transformers": transformers.__version__, "python": platform.python_version()}
    if device == "cuda":
        res["gpu"] = torch.cuda.get_device_name(0)
        res["cuda"] = torch.version.cuda
    t_start = time.perf_counter()
    measured = matmul_rate(device, 8192 if device == "cuda" else 512,
                           "bfloat16" if device == "cuda" else "float32")
    sheet = datasheet_peak(res.get("gpu", "")) if device == "cuda" else None
    res["peaks"] = [(f"datasheet {sheet / 1e12:.0f} TFLOP/s", sheet) if sheet else ("datasheet", None),
                    (f"measured matmul {measured / 1e12:.0f} TFLOP/s" if device == "cuda"
                     else f"measured fp32 matmul {measured / 1e9:.0f} GFLOP/s", measured)]
    print(f"{res.get('gpu', 'CPU')}: torch {torch.__version__}, transformers {transformers.__version__}; "
          f"{count(res['n_parameters'])} parameters, {count(fpt)}FLOP/token at seq {args.seq}; "
          f"{res['peaks'][1][0]}", flush=True)

    with tempfile.TemporaryDirectory(prefix="gpu_bench_") as tmp:
        cfg_dir = os.path.join(tmp, "model")
        os.makedirs(cfg_dir)
        cfg_path = os.path.join(cfg_dir, "config.json")
        with open(cfg_path, "w") as f:
            json.dump(config, f, indent=2)
        # Uniform random ids: enough windows that neither side repeats one.
        rng = np.random.default_rng(0)
        n_tokens = max(1 << 20, 4 * args.seq * args.batch * (args.warmup + args.steps))
        tokens = rng.integers(0, config["vocab_size"], size=n_tokens, dtype=np.int32)
        data_path = os.path.join(tmp, "tokens.npy")
        np.save(data_path, tokens)
        log_path = args.log or os.path.join(tmp, "meshtrain.log")

        # meshtrain first, in its own process: its GPU memory is all returned before HF starts.
        if args.skip_meshtrain:
            res["meshtrain"] = {"skipped": "--skip-meshtrain"}
        elif not os.path.exists(args.meshtrain):
            res["meshtrain"] = {"skipped": f"{args.meshtrain} not built"}
        else:
            res["meshtrain"] = run_meshtrain(args.meshtrain, cfg_path, data_path, args, device, log_path)
        print("meshtrain:", {k: v for k, v in res["meshtrain"].items() if k not in ("command", "steps_tokens_per_s")},
              flush=True)
        res["hf"] = {"skipped": "--skip-hf"} if args.skip_hf else run_hf(cfg_path, tokens, args, device)
        print("HF:", {k: v for k, v in res["hf"].items() if k != "steps_tokens_per_s"}, flush=True)
    res["wall_s"] = time.perf_counter() - t_start

    text = (f"{res.get('gpu', 'CPU (smoke test)')}, torch {res['torch']}, transformers {res['transformers']}: "
            f"{count(res['n_parameters'])} parameters, batch {args.batch} x seq {args.seq}, "
            f"{'bf16 autocast' if args.bf16 else 'fp32'}, median of {args.steps} steps after {args.warmup}; "
            f"flops_per_token {count(fpt)} = 6 x {count(n_matmul)} + 12 L T H d\n\n"
            + table(res) + "\n\n" + verdict(res) + "\n")
    print("\n" + text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=str)
    ok = all("tokens_per_s" in res[s] or "skipped" in res[s] for s in ("meshtrain", "hf"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
