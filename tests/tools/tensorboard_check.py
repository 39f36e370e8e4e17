"""Checks a run's TensorBoard event files against its metrics.jsonl, read by TensorBoard's own
EventAccumulator (orphan purging on, as TensorBoard runs it): every number of every record is
there once, at the record's step, under Hugging Face TensorBoardCallback's tag, equal to the
float32 of the logged value, and nothing else is. Prints every difference and exits 1 on any.
  tensorboard_check.py RUN_DIR LOGDIR [TAG ...]    TAGs: tags that must be among them
"""
import json
import sys

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def flatten(prefix, value, out):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        out[prefix] = value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            flatten(f"{prefix}/{i}", item, out)
    elif isinstance(value, dict):
        for key, item in value.items():
            flatten(f"{prefix}/{key}", item, out)


# A record's scalars by tag, as HF's rewrite_logs names them (our "lr" is HF's "learning_rate").
def expected_scalars(record):
    out = {}
    for key, value in record.items():
        if key == "step":
            continue
        if key == "tokens_per_expert":
            for layer, counts in enumerate(value):
                for expert, n in enumerate(counts):
                    out[f"moe/layer_{layer}/expert_{expert}"] = n
        elif key == "bytes_sent_per_step":
            for group, n in value.items():
                out[f"comm/{group}_bytes_per_step"] = n
        elif key.startswith(("eval_", "test_")):
            flatten(key[:4] + "/" + key[5:], value, out)
        else:
            flatten("train/" + {"lr": "learning_rate"}.get(key, key), value, out)
    return out


def main(run_dir, logdir, *required_tags):
    with open(f"{run_dir}/metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    acc = EventAccumulator(logdir, size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    logged = {}  # (tag, step) -> [values]
    for tag in acc.Tags()["scalars"]:
        for event in acc.Scalars(tag):
            logged.setdefault((tag, event.step), []).append(event.value)

    errors = []
    wanted = set()
    for record in records:
        step = record["step"]
        for tag, value in expected_scalars(record).items():
            wanted.add((tag, step))
            got = logged.get((tag, step), [])
            want = float(np.float32(value))
            if len(got) != 1:
                errors.append(f"{tag} at step {step}: {len(got)} events {got}, want one of {want}")
            elif got[0] != want:
                errors.append(f"{tag} at step {step}: {got[0]!r}, want float32({value!r}) = {want!r}")
    for tag, step in sorted(set(logged) - wanted):
        errors.append(f"{tag} at step {step}: {logged[(tag, step)]} is not in metrics.jsonl")
    tags = {tag for tag, _ in logged}
    for tag in required_tags:
        if tag not in tags:
            errors.append(f"no scalars tagged {tag}; tags: {sorted(tags)}")
    if not records:
        errors.append(f"{run_dir}/metrics.jsonl has no records")
    for e in errors:
        print(e)
    print(f"checked {len(wanted)} scalars of {len(records)} records: {len(errors)} differences")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
