"""Evaluation: held-out perplexity, cloze, multiple choice, math and code generation, one interface.

`evaluate(model, tokenizer, metrics=..., domains=...)` runs any registered metric (see `METRICS`)
and returns one DataFrame. Importing the metric modules registers them, in this order.
"""

from finescope_nb.evaluate.registry import (METRICS, EvalOptions, Metric, evaluate, register, retained_accuracy,
                                            retained_table)
from finescope_nb.evaluate.perplexity import (HELDOUT_PICKS, domain_loss, domain_perplexity, grouped_loss, heldout_documents,
                                              heldout_sequences, pick_documents, retained, sequences_by_source, token_nll, tokenize_texts,
                                              unigram_counts, unigram_nll, unigram_perplexity)
from finescope_nb.evaluate import cloze, choice_tasks, generation, code_tasks  # noqa: F401  (registers their metrics)

__all__ = ["METRICS", "EvalOptions", "Metric", "evaluate", "register", "retained", "retained_accuracy", "retained_table",
           "HELDOUT_PICKS", "domain_loss", "domain_perplexity", "grouped_loss", "heldout_documents", "heldout_sequences", "pick_documents",
           "sequences_by_source", "token_nll", "tokenize_texts", "unigram_counts", "unigram_nll",
           "unigram_perplexity"]
