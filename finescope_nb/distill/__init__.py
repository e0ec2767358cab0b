"""The recovery stage: self-data distillation of the pruned model from the unpruned one.

    from finescope_nb.distill import prepare, run_arm, FinetuneConfig

`split` cuts curated records into prompt and response, `teacher` regenerates responses with the
unpruned model, `agreement` filters them, `finetune` trains the student (LoRA or full, response
tokens only), `recovery` runs the arms (self-distillation, plain, random, none) on one budget.
"""

from finescope_nb.distill.agreement import DEFAULT_THRESHOLD, agreement, filter_responses, final_answer, keep_rate_curve, word_f1
from finescope_nb.distill.finetune import FinetuneConfig, collate, encode_pairs, finetune, lora_targets
from finescope_nb.distill.recovery import ARMS, RecoveryData, prepare, run_arm
from finescope_nb.distill.split import Example, split_examples
from finescope_nb.distill.teacher import check_same_tokenizer, regenerate

__all__ = ["ARMS", "DEFAULT_THRESHOLD", "Example", "FinetuneConfig", "RecoveryData", "agreement", "check_same_tokenizer", "collate",
           "encode_pairs", "filter_responses", "final_answer", "finetune", "keep_rate_curve", "lora_targets", "prepare",
           "regenerate", "run_arm", "split_examples", "word_f1"]
