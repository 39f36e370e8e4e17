"""Trains small tokenizers with Hugging Face `tokenizers` and writes what upstream makes of a test
corpus, for tokenizer_test.cpp and the tokenize CLI test.
  make_tokenizers.py OUT_DIR CORPUS TRAIN_FILE...
Writes OUT_DIR/<family>/{tokenizer.json, tokenizer_config.json, reference.jsonl}. reference.jsonl
has one object per test text (each line of CORPUS without its "\\n", then each block between blank
lines): "hex" (the text's bytes), "valid" (UTF-8, so that Python can hold it); for valid texts also
"ids" (encode without special tokens), "ids_special" (with), "decode" / "decode_skip" (decode of
ids_special without / with skip_special_tokens) and "round_trip" (decode(ids) == text).
Texts that are not valid UTF-8 get no reference: a Python str cannot hold them.
"""
import json
import os
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPACE = "\u2581"


def training_lines(train_files):
    """The valid UTF-8 lines of the training files (the test corpus has some that are not)."""
    for path in train_files:
        for raw in open(path, "rb").read().split(b"\n"):
            try:
                yield raw.decode("utf-8") + "\n"
            except UnicodeDecodeError:
                pass


def byte_level(train_files):
    """Llama-3 layout: Split(regex) + ByteLevel, BOS template, ignore_merges."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(training_lines(train_files), trainer)
    tok.add_special_tokens([AddedToken("<|mask|>", special=True, lstrip=True, rstrip=True, normalized=False)])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)])])
    j = json.loads(tok.to_str())
    j["model"]["ignore_merges"] = True
    llama3 = Tokenizer.from_str(json.dumps(j))

    # GPT-2 layout on the same vocabulary: ByteLevel with its own regex and a prefix space,
    # merges in the older "a b" string form.
    j2 = json.loads(tok.to_str())
    j2["pre_tokenizer"] = json.loads(pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True).__getstate__())
    j2["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    j2["model"]["merges"] = [" ".join(m) for m in j2["model"]["merges"]]
    gpt2 = Tokenizer.from_str(json.dumps(j2))

    # Qwen2's regex (single digits) and NFC normalizer, no template.
    j3 = json.loads(tok.to_str())
    j3["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {"Regex": QWEN2}
    j3["normalizer"] = {"type": "NFC"}
    j3["post_processor"] = None
    qwen2 = Tokenizer.from_str(json.dumps(j3))
    cfg = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}
    return {"llama3": (llama3, cfg), "gpt2": (gpt2, cfg), "qwen2": (qwen2, {"eos_token": "<|end_of_text|>"})}


def with_byte_tokens(tok):
    """tokenizer.json of `tok` with <0x00>..<0xFF> after the special tokens, as SentencePiece lays it out."""
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    specials = [a["content"] for a in sorted(j["added_tokens"], key=lambda a: a["id"])]
    order = specials + [f"<0x{b:02X}>" for b in range(256)]
    order += [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in set(order)]
    j["model"]["vocab"] = {t: i for i, t in enumerate(order)}
    for a in j["added_tokens"]:
        a["id"] = j["model"]["vocab"][a["content"]]
    return j


def sentencepiece(train_files):
    """Llama-2 / Mistral layouts: byte fallback, fused unk, ▁ for spaces."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=120,
                                  show_progress=False)
    tok.train_from_iterator(training_lines(train_files), trainer)
    j = with_byte_tokens(tok)
    bos = j["model"]["vocab"]["<s>"]
    # Mistral-like: Metaspace pre-tokenizer; decoded through the Metaspace decoder.
    j["decoder"] = {"type": "Sequence", "decoders": [
        json.loads(decoders.ByteFallback().__getstate__()),
        json.loads(decoders.Metaspace(replacement=SPACE, prepend_scheme="first").__getstate__()),
        json.loads(decoders.Fuse().__getstate__())]}
    metaspace = Tokenizer.from_str(json.dumps(j))
    metaspace.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])

    # Llama-2 layout: no pre-tokenizer (a whole piece is one word), Prepend + Replace normalizer.
    llama2 = Tokenizer.from_str(json.dumps(j))
    llama2.pre_tokenizer = None
    llama2.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
    llama2.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(),
                                        decoders.Strip(" ", 1, 0)])
    llama2.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    llama2.add_tokens([AddedToken("quick brown", normalized=True)])
    cfg = {"bos_token": "<s>", "eos_token": "</s>"}
    return {"metaspace": (metaspace, cfg), "llama2": (llama2, cfg)}


def texts(corpus_path):
    data = open(corpus_path, "rb").read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines + [b for b in data.split(b"\n\n") if b.strip()]


def reference(tok, raw):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": raw.hex(), "valid": False}
    ids = tok.encode(text, add_special_tokens=False).ids
    ids_special = tok.encode(text).ids
    return {"hex": raw.hex(), "valid": True, "ids": ids, "ids_special": ids_special,
            "decode": tok.decode(ids_special, skip_special_tokens=False),
            "decode_skip": tok.decode(ids_special, skip_special_tokens=True),
            "round_trip": tok.decode(ids, skip_special_tokens=False) == text}


def main(out_dir, corpus, *train_files):
    families = {**byte_level(list(train_files)), **sentencepiece(list(train_files))}
    items = texts(corpus)
    for name, (tok, cfg) in families.items():
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        tok.save(os.path.join(d, "tokenizer.json"))
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump(cfg, f)
        with open(os.path.join(d, "reference.jsonl"), "w") as f:
            for raw in items:
                f.write(json.dumps(reference(tok, raw)) + "\n")
    print(" ".join(families))


if __name__ == "__main__":
    main(*sys.argv[1:])
