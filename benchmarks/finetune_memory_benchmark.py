"""Peak memory of fine-tuning against the teacher's distributions, whole logits against logits formed a
slice at a time (distill.finetune's WHOLE_LOGITS_ELEMENTS rule). Writes results/<model>/finetune_memory.json.

    python benchmarks/finetune_memory_benchmark.py --model gemma3-270m

Each arm is a fresh process that loads the model twice (teacher and student, as the recover stage
does), trains `--steps` LoRA steps on `--batch` x `--tokens` pool text with the kit's default
kd_weight, and reports its peak resident memory while training (VmHWM, reset after loading; the
loading peak is reported apart) and seconds per step. With Gemma 3's
262,144-token vocabulary the whole-logit arm holds [batch, tokens, vocabulary] logits for the student,
their log-softmax and gradient, and the teacher's; the sliced arm one slice of positions at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finescope_nb.artifacts import write_json_atomic  # noqa: E402
from finescope_nb.basemodel import hardware  # noqa: E402
from finescope_nb.config import FinetuneConfig  # noqa: E402
from benchmarks.common import add_model_args, provenance, result_path  # noqa: E402

ARM = """
import json, sys, time
sys.path.insert(0, {root!r})
import importlib
module = importlib.import_module("finescope_nb.distill.finetune")  # the module, not the function the package exports
from finescope_nb.config import FinetuneConfig
from finescope_nb.lm import load_model, load_tokenizer
from finescope_nb.sae.cache import shuffled_texts
module.WHOLE_LOGITS_ELEMENTS = 0 if {sliced!r} else 1 << 62
from benchmarks.memory import peak_kib, reset_peak
tok = load_tokenizer({model!r})
teacher, student = load_model({model!r}), load_model({model!r})
texts = [t for t in shuffled_texts("pool", 3, 2000) if len(tok(t)["input_ids"]) > {tokens}][: {batch}]
if len(texts) < {batch}:
    sys.exit(f"only {{len(texts)}} of 2,000 pool documents are longer than {tokens} tokens; lower --tokens or --batch")
ids = [tok(t, add_special_tokens=False)["input_ids"][: {tokens} - 1] for t in texts]
prompts, responses = [tok.decode(i[:16]) for i in ids], [tok.decode(i[16:]) for i in ids]
config = FinetuneConfig(method="lora", steps={steps}, eval_every={steps}, batch_size={batch}, max_length={tokens})
loading = peak_kib() / 1024
if not reset_peak():
    sys.exit("/proc/self/clear_refs cannot be written here, so the training's own peak cannot be told from loading's")
start = time.perf_counter()
module.finetune(student, tok, prompts, responses, config, progress=False, teacher=teacher)
seconds = (time.perf_counter() - start) / {steps}
print(json.dumps({{"peak_rss_mib": peak_kib() / 1024, "peak_while_loading_mib": loading, "seconds_per_step": seconds}}))
"""


def arm(model: str | None, sliced: bool, batch: int, tokens: int, steps: int) -> dict:
    code = ARM.format(root=str(ROOT), model=model, sliced=sliced, batch=batch, tokens=tokens, steps=steps)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    if done.returncode != 0:
        raise SystemExit(f"the {'sliced' if sliced else 'whole-logit'} arm failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser, pool=False)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    if min(args.batch, args.steps) < 1 or args.tokens <= 32:
        parser.error(f"--batch and --steps must be at least 1 and --tokens above 32 (got {args.batch}, {args.steps}, "
                     f"{args.tokens}): each example is a 16-token prompt and the rest as its response")
    arms = {name: arm(args.model, sliced, args.batch, args.tokens, args.steps)
            for name, sliced in (("whole logits", False), ("sliced logits", True))}
    for name, row in arms.items():
        print(f"{name}: peak {row['peak_rss_mib']:.0f} MiB, {row['seconds_per_step']:.1f} s a step", flush=True)
    result = provenance(args) | {
        "hardware": hardware(), "setup": f"LoRA, kd_weight {FinetuneConfig().kd_weight} (the default), teacher = the "
                                         f"same model, {args.batch} x {args.tokens} tokens, {args.steps} steps, one process "
                                         "per arm; peak_rss_mib is the peak while training (VmHWM reset after loading)",
        "arms": arms, "peak_ratio_sliced_to_whole": arms["sliced logits"]["peak_rss_mib"] / arms["whole logits"]["peak_rss_mib"],
        "step_time_ratio_sliced_to_whole": arms["sliced logits"]["seconds_per_step"] / arms["whole logits"]["seconds_per_step"]}
    write_json_atomic(result_path(args, "finetune_memory.json"), result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
