"""Single-process training throughput: meshtrain against Hugging Face transformers.

Model configs/llama-small/config.json, seq 256, batch 8, fp32, AdamW (lr 1e-3), grad-norm clip
1.0, the bytes of data/corpus.txt as tokens. For each round it runs
  meshtrain  build/meshtrain train ... (a fresh process; per-step tokens_per_s from metrics.jsonl)
  HF         LlamaForCausalLM (sdpa attention) + torch.optim.AdamW, eager, in this process
and optionally (--omp-variants) meshtrain with OMP_WAIT_POLICY=PASSIVE and the HF loop in a
child process twice, with the default environment and with OMP_WAIT_POLICY=PASSIVE. Rounds
alternate because the machine is shared. The first --warmup steps of every round are dropped;
the figure of merit is the median tokens/s. MFU = tokens/s * flops_per_token / GEMM rate, flops_per_token from `meshtrain info`
and the GEMM rate an fp32 2048^3 matmul measured here (best of 3 after warm-up), before every
round and at the end; the highest is used. meshtrain's own mfu field (against the GEMM rate it
measures at its start) is reported alongside.

Run: ~/.cache/meshtrain/venv/bin/python bench/train_throughput.py --rounds 3 --steps 30
Nothing is downloaded; temporary directories are removed on exit.
"""
import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SEQ, BATCH, LR = 256, 8, 1e-3


# ----------------------------------------------------------------------------- machine noise
def _busy_jiffies():
    """Busy CPU time of the whole machine (all processes), in clock ticks, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = fields[:7]
    steal = fields[7] if len(fields) > 7 else 0
    return user + nice + system + irq + softirq + steal


CONTENDERS = []  # busy-loop child processes of --contend


def _contender_seconds():
    total = 0
    for proc in CONTENDERS:
        try:
            with open(f"/proc/{proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def _ours():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + _contender_seconds()


def other_cores_busy(seconds):
    """Average cores used by processes other than this one and its children over `seconds`."""
    busy0, ours0, t0 = _busy_jiffies(), _ours(), time.monotonic()
    time.sleep(seconds)
    machine = (_busy_jiffies() - busy0) / os.sysconf("SC_CLK_TCK")
    return max(0.0, machine - (_ours() - ours0)) / (time.monotonic() - t0)


def wait_quiet(limit_s, threshold=0.1, window_s=3.0):
    """Waits until other processes use under `threshold` cores over `window_s`; at most limit_s."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if other_cores_busy(window_s) < threshold:
            break
    return time.monotonic() - t0


class Noise:
    """Measures what else ran during a round: the load average before/after and the average
    number of cores busy with processes other than this one, its children and --contend loops."""

    def __enter__(self):
        self.load0 = os.getloadavg()[0]
        self.busy0, self.ours0, self.wall0 = _busy_jiffies(), _ours(), time.monotonic()
        return self

    def __exit__(self, *exc):
        wall = time.monotonic() - self.wall0
        ours = _ours() - self.ours0
        machine = (_busy_jiffies() - self.busy0) / os.sysconf("SC_CLK_TCK")
        self.result = {"load1_before": round(self.load0, 2), "load1_after": round(os.getloadavg()[0], 2),
                       "other_cores_busy": round(max(0.0, machine - ours) / wall, 2),
                       "round_wall_s": round(wall, 1)}
        return False


def _threads_of(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None


# ----------------------------------------------------------------------------- GEMM rate
def gemm_rate(n=2048, repeats=3):
    """fp32 n^3 matmul FLOP/s, best of `repeats` after one warm-up (as meshtrain's own)."""
    import torch
    with torch.no_grad():
        a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        torch.mm(a, b, out=c)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


# ----------------------------------------------------------------------------- HF round
def hf_round(config_path, data_path, steps, seed, profile_steps=0):
    """Trains a fresh LlamaForCausalLM for `steps` steps; returns per-step seconds and losses."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(seed)
    config = LlamaConfig.from_json_file(config_path)
    config._attn_implementation = "sdpa"  # the default; explicit so the benchmark states it
    model = LlamaForCausalLM(config).float().train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR)
    with open(data_path, "rb") as f:
        data = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8).to(torch.int64)
    windows = data.unfold(0, SEQ, 1)  # [n - SEQ + 1, SEQ] view
    gen = torch.Generator().manual_seed(seed)

    def step():
        starts = torch.randint(0, windows.shape[0], (BATCH,), generator=gen)
        ids = windows[starts].contiguous()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        return out.loss.item()

    times, losses, threads = [], [], None
    for i in range(steps):
        t0 = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - t0)
        if i == 1:
            threads = _threads_of(os.getpid())
    result = {"step_s": times, "loss": losses, "threads": threads,
              "attn_implementation": model.config._attn_implementation}
    if profile_steps:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(profile_steps):
                step()
        result["profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    return result


def hf_round_subprocess(args, extra_env):
    env = dict(os.environ, **extra_env)
    with tempfile.TemporaryDirectory(prefix="bench_hf_") as tmp:
        out = os.path.join(tmp, "hf.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--_hf-worker", out,
               "--steps", str(args.steps), "--config", args.config, "--data", args.data]
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            return json.load(f)


# ----------------------------------------------------------------------------- meshtrain round
def meshtrain_round(binary, args, extra_env=None):
    with tempfile.TemporaryDirectory(prefix="bench_mt_") as tmp:
        out_dir = os.path.join(tmp, "run")
        cmd = [binary, "train", "--config_name", args.config, "--data", args.data,
               "--seq_len", str(SEQ), "--per_device_train_batch_size", str(BATCH),
               "--max_steps", str(args.steps), "--logging_steps", "1", "--save_steps", "0",
               "--learning_rate", str(LR), "--warmup_steps", "0", "--lr_scheduler_type", "constant",
               "--output_dir", out_dir]
        log_path = os.path.join(tmp, "log.txt")
        threads = 0
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    env=dict(os.environ, **(extra_env or {})))
            try:
                while proc.poll() is None:
                    threads = max(threads, _threads_of(proc.pid) or 0)
                    time.sleep(0.5)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if proc.returncode != 0:
            with open(log_path) as f:
                sys.exit(f"meshtrain failed ({proc.returncode}):\n{f.read()[-3000:]}")
        with open(os.path.join(out_dir, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    return {"rows": rows, "threads": threads}


# ----------------------------------------------------------------------------- helpers
def meshtrain_info(binary, config):
    out = subprocess.run([binary, "info", os.path.dirname(config), "--seq_len", str(SEQ)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    m = re.search(r"flops_per_token:\s*([0-9.eE+-]+)", out)
    if not m:
        sys.exit(f"no flops_per_token line in `meshtrain info`:\n{out}")
    return float(m.group(1)), out


def exact_flops_per_token(config):
    """6 * N_matmul + 12 * L * T * H * d, the definition meshtrain's info prints (6 digits)."""
    c = json.load(open(config))
    L, D, V, I = c["num_hidden_layers"], c["hidden_size"], c["vocab_size"], c["intermediate_size"]
    H, Hkv = c["num_attention_heads"], c["num_key_value_heads"]
    d = c.get("head_dim") or D // H
    n_matmul = L * (2 * D * H * d + 2 * D * Hkv * d + 3 * D * I) + V * D
    return 6 * n_matmul + 12 * L * SEQ * H * d


def machine_info():
    import torch
    import transformers
    model = platform.processor()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"Model name:\s*(.+)", lscpu)
        model = m.group(1).strip() if m else model
    except OSError:
        pass
    par = torch.__config__.parallel_info().splitlines()
    keep = [l.strip() for l in par if re.search(r"thread|MKL|BLAS|OpenMP|backend|oneDNN|MKL-DNN", l, re.I)]
    return {"cpu": model, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "blas": torch.backends.mkl.is_available() and "MKL" or "other",
            "parallel_info": keep}


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def summarize_hf(res, warmup, fpt, rate):
    tps = [BATCH * SEQ / s for s in res["step_s"][warmup:]]
    return {"tokens_per_s": med(tps), "mfu": med(tps) * fpt / rate, "steps_tps": tps,
            "threads": res.get("threads"), "first_loss": res["loss"][0], "last_loss": res["loss"][-1]}


def summarize_mt(res, warmup, fpt, rate):
    rows = [r for r in res["rows"] if r["step"] > warmup]
    tps = [r["tokens_per_s"] for r in rows]
    implied = [r["tokens_per_s"] * fpt / r["mfu"] for r in rows if r["mfu"] > 0]
    return {"tokens_per_s": med(tps), "mfu": med(tps) * fpt / rate, "mfu_self": med([r["mfu"] for r in rows]),
            "self_gemm_flops": med(implied), "steps_tps": tps, "threads": res["threads"],
            "first_loss": res["rows"][0]["loss"], "last_loss": res["rows"][-1]["loss"]}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- main
def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=30, help="steps per round (each side)")
    p.add_argument("--warmup", type=int, default=5, help="steps dropped at the start of each round")
    p.add_argument("--omp-variants", action="store_true",
                   help="also run meshtrain with OMP_WAIT_POLICY=PASSIVE and HF in a child process, "
                        "default env and OMP_WAIT_POLICY=PASSIVE")
    p.add_argument("--quiet-wait", type=float, default=120, metavar="S",
                   help="before each run wait until other processes use < 0.1 cores (3 s window), "
                        "at most S seconds (0: don't wait)")
    p.add_argument("--contend", type=int, default=0, metavar="K",
                   help="controlled contention: K busy-loop processes run during all rounds")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after the rounds, profile N HF steps with torch.profiler and print the top ops")
    p.add_argument("--json", metavar="OUT", help="write all results to this JSON file")
    p.add_argument("--meshtrain", default=os.path.join(ROOT, "build", "meshtrain"))
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "llama-small", "config.json"))
    p.add_argument("--data", default=os.path.join(ROOT, "data", "corpus.txt"))
    p.add_argument("--_hf-worker", dest="hf_worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    # SIGTERM unwinds like an exception, so the temporary directories are still removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    args.config, args.data = os.path.abspath(args.config), os.path.abspath(args.data)

    if args.hf_worker:  # child process: one HF round, result to a JSON file
        res = hf_round(args.config, args.data, args.steps, seed=42)
        res["env_OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY")
        with open(args.hf_worker, "w") as f:
            json.dump(res, f)
        return

    import torch
    torch.set_num_threads(os.cpu_count())
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="bench_bin_") as bindir:
        # A private copy, so a concurrent rebuild of build/meshtrain cannot change it mid-run.
        binary = os.path.join(bindir, "meshtrain")
        shutil.copy2(args.meshtrain, binary)
        info["meshtrain_sha256"] = sha256(binary)[:16]
        fpt, info_text = meshtrain_info(binary, args.config)
        exact = exact_flops_per_token(args.config)
        if abs(exact - fpt) > 1e-5 * fpt:
            print(f"warning: meshtrain info flops_per_token {fpt:g} != formula {exact}", file=sys.stderr)
        rate0 = gemm_rate()
        print(f"{info['cpu']}, {info['cpu_count']} cores, torch {info['torch']}, "
              f"transformers {info['transformers']}, BLAS {info['blas']}")
        for line in info["parallel_info"]:
            print("  " + line)
        print(f"flops_per_token {fpt:.6g} (formula {exact}); GEMM rate {rate0 / 1e9:.1f} GFLOP/s\n")

        for _ in range(args.contend):
            CONTENDERS.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        try:
            rates, raw = run_rounds(args, binary, fpt, rate0)
        finally:
            for proc in CONTENDERS:
                proc.kill()
                proc.wait()
    rate = max(rates)  # noise only lowers a best-of-3; the highest is the least disturbed
    report(args, info, fpt, exact, info_text, rates, rate, raw)


def run_rounds(args, binary, fpt, rate0):
    """Alternates the variants for args.rounds rounds; returns the GEMM rates and raw results."""
    variants = [("meshtrain", None), ("hf", None)]
    if args.omp_variants:
        variants += [("meshtrain_passive", {"OMP_WAIT_POLICY": "PASSIVE"}), ("hf_child", {}),
                     ("hf_child_passive", {"OMP_WAIT_POLICY": "PASSIVE"})]
    raw = {name: [] for name, _ in variants}
    rates = [rate0]
    for r in range(args.rounds):
        if r:
            rates.append(gemm_rate())
        for name, env in variants:
            waited = wait_quiet(args.quiet_wait) if args.quiet_wait > 0 else 0.0
            with Noise() as noise:
                if name.startswith("meshtrain"):
                    res = meshtrain_round(binary, args, env)
                elif name == "hf":
                    res = hf_round(args.config, args.data, args.steps, seed=42)
                else:
                    res = hf_round_subprocess(args, env)
            res["noise"] = dict(noise.result, waited_for_quiet_s=round(waited, 1))
            raw[name].append(res)
            tps = (med([x["tokens_per_s"] for x in res["rows"][args.warmup:]]) if name.startswith("meshtrain")
                   else med([BATCH * SEQ / s for s in res["step_s"][args.warmup:]]))
            print(f"round {r + 1} {name:17s} {tps:7.0f} tok/s  threads {res['threads']}  "
                  f"load {noise.result['load1_before']}->{noise.result['load1_after']}  "
                  f"other cores busy {noise.result['other_cores_busy']}  "
                  f"(waited {waited:.0f} s for quiet)", flush=True)
    rates.append(gemm_rate())
    return rates, raw


def report(args, info, fpt, exact, info_text, rates, rate, raw):
    summary = {}
    for name, rounds in raw.items():
        fn = summarize_mt if name.startswith("meshtrain") else summarize_hf
        per = [fn(x, args.warmup, fpt, rate) for x in rounds]
        for s, x in zip(per, rounds):
            s["noise"] = x["noise"]
        pooled = [t for s in per for t in s["steps_tps"]]
        summary[name] = {"rounds": per, "median_tokens_per_s": med(pooled),
                         "median_of_round_medians": med([s["tokens_per_s"] for s in per]),
                         "mfu": med(pooled) * fpt / rate}
    ratio = summary["meshtrain"]["median_tokens_per_s"] / summary["hf"]["median_tokens_per_s"]
    paired = [m["tokens_per_s"] / h["tokens_per_s"]
              for m, h in zip(summary["meshtrain"]["rounds"], summary["hf"]["rounds"])]

    print("\nGEMM rate before each round and at the end: "
          + ", ".join(f"{x / 1e9:.1f}" for x in rates) + f" GFLOP/s; MFU uses the highest, {rate / 1e9:.1f}")
    print(f"median over the {args.steps - args.warmup} post-warm-up steps of each round:")
    hdr = f"{'':18s}" + "".join(f"  round {r + 1:<10d}" for r in range(args.rounds)) + "  all rounds"
    print(hdr)
    for name, s in summary.items():
        cells = "".join(f"  {x['tokens_per_s']:6.0f} {100 * x['mfu']:5.1f}%"
                        + ("* " if x["noise"]["other_cores_busy"] > 0.2 else "  ") for x in s["rounds"])
        print(f"{name:18s}{cells}  {s['median_tokens_per_s']:6.0f} {100 * s['mfu']:5.1f}%")
    print("(* other processes kept more than 0.2 cores busy during that round)")
    mt = summary["meshtrain"]["rounds"]
    print("meshtrain self-reported mfu per round: " +
          ", ".join(f"{100 * x['mfu_self']:.1f}% (its GEMM {x['self_gemm_flops'] / 1e9:.1f} GF/s)" for x in mt))
    print(f"ratio meshtrain/HF: {ratio:.2f} (pooled medians); per round "
          + ", ".join(f"{x:.2f}" for x in paired))
    for default, passive in (("meshtrain", "meshtrain_passive"), ("hf_child", "hf_child_passive")):
        if passive in summary:
            a, b = summary[default]["median_tokens_per_s"], summary[passive]["median_tokens_per_s"]
            print(f"{default}: default {a:.0f} tok/s, OMP_WAIT_POLICY=PASSIVE {b:.0f} tok/s "
                  f"(PASSIVE/default {b / a:.2f})")

    profile = None
    if args.profile:
        profile = hf_round(args.config, args.data, 3, seed=42, profile_steps=args.profile)["profile"]
        print(f"\ntorch.profiler, {args.profile} HF steps (after 3 warm-up steps):\n{profile}")

    if args.json:
        out = {"machine": info, "flops_per_token": fpt, "flops_per_token_formula": exact,
               "meshtrain_info": info_text, "gemm_flops": {"measured": rates, "used": rate},
               "settings": {"rounds": args.rounds, "steps": args.steps, "warmup": args.warmup,
                            "contend": args.contend, "quiet_wait_s": args.quiet_wait,
                            "seq_len": SEQ, "batch": BATCH, "lr": LR, "dtype": "float32"},
               "summary": summary, "ratio_meshtrain_over_hf": ratio, "ratio_per_round": paired,
               "hf_profile": profile}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
