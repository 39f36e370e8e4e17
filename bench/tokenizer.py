"""Encode throughput of meshtrain's tokenizer.json implementation against Hugging Face tokenizers.
  bench/tokenizer.py [--meshtrain build/meshtrain] [--threads 2] [--megabytes 20]
Trains the test tokenizers (tests/data/make_tokenizers.py), writes data/corpus.txt repeated to
--megabytes as one .txt (blank lines separate documents), then times, per family:
  meshtrain tokenize --threads T   (whole run: load, read, encode, write the .bin)
  tokenizers encode_batch          (RAYON_NUM_THREADS=T, documents already in memory)
and checks that both produce the same token count. Results go in docs/benchmarks.md.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def documents(text):
    """Runs of non-blank lines, as meshtrain tokenize reads a .txt."""
    docs, cur = [], []
    for line in text.split("\n"):
        if line.strip(" \t\r"):
            cur.append(line)
        elif cur:
            docs.append("\n".join(cur))
            cur = []
    if cur:
        docs.append("\n".join(cur))
    return docs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--meshtrain", default=os.path.join(ROOT, "build", "meshtrain"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--megabytes", type=float, default=20)
    ap.add_argument("--families", default="llama3,llama2")
    args = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # before tokenizers starts its pool
    from tokenizers import Tokenizer

    work = tempfile.mkdtemp(prefix="mt_bench_tok_")
    corpus = os.path.join(ROOT, "tests", "golden", "tokenizer_corpus.txt")
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "data", "make_tokenizers.py"), work, corpus,
                    os.path.join(ROOT, "data", "corpus.txt"), corpus], check=True, stdout=subprocess.DEVNULL)
    base = open(os.path.join(ROOT, "data", "corpus.txt"), encoding="utf-8").read()
    text = (base + "\n\n") * max(1, int(args.megabytes * 1e6 / len(base.encode())))
    data = os.path.join(work, "bench.txt")
    open(data, "w", encoding="utf-8").write(text)
    mb = len(text.encode()) / 1e6
    docs = documents(text)
    print(f"input: {mb:.1f} MB, {len(docs)} documents, {args.threads} threads")
    for family in args.families.split(","):
        tok_dir = os.path.join(work, family)
        t0 = time.perf_counter()
        r = subprocess.run([args.meshtrain, "tokenize", "--tokenizer", tok_dir, "--data", data, "--output",
                            os.path.join(work, family + ".bin"), "--threads", str(args.threads)],
                           check=True, capture_output=True, text=True)
        mt_s = time.perf_counter() - t0
        mt_tokens = int(r.stdout.split("tokens: ")[1].split()[0])
        tok = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
        tok.encode_batch(docs[:100])  # warm the thread pool
        t0 = time.perf_counter()
        encodings = tok.encode_batch(docs)
        hf_s = time.perf_counter() - t0
        eos = 1 if tok.token_to_id("</s>" if family == "llama2" else "<|end_of_text|>") is not None else 0
        hf_tokens = sum(len(e.ids) + eos for e in encodings)
        print(f"{family}: meshtrain tokenize {mb / mt_s:.2f} MB/s ({mt_s:.2f} s, {mt_tokens} tokens), "
              f"tokenizers encode_batch {mb / hf_s:.2f} MB/s ({hf_s:.2f} s, {hf_tokens} tokens), "
              f"ratio {hf_s / mt_s:.2f}x{'' if hf_tokens == mt_tokens else '  TOKEN COUNTS DIFFER'}")


if __name__ == "__main__":
    main()
