"""Tiny random models and word-level tokenizers for the SAE-stage tests (milliseconds per forward)."""

import random

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (AutoModelForCausalLM, Gemma3TextConfig, GPT2Config, GPTNeoXConfig, LlamaConfig, MistralConfig,
                          PreTrainedTokenizerFast, Qwen2Config)

WORDS = ("the a of to and in is it that for on with as was at by an be this are from or had not but what all were "
         "when we there can your which their said if do will each about how up out them then she many some so "
         "these would other into has more her two like him see time could no make than first been its who now "
         "people my made over did down only way find use may water long little very after words called just").split()
DOMAINS = ("math", "code", "stem")

# One tiny config per supported family, all with the same shapes (GQA 4/2 where the family has it).
VOCAB, HIDDEN, LAYERS, HEADS, HEAD_DIM, INTER = len(WORDS) + 3, 32, 3, 4, 8, 48
TOKENS = dict(bos_token_id=0, eos_token_id=0, pad_token_id=1)
LLAMA_LIKE = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=LAYERS,
                  num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=128,
                  initializer_range=0.3, **TOKENS)
CONFIGS = {
    "llama": lambda: LlamaConfig(**LLAMA_LIKE),
    "qwen2": lambda: Qwen2Config(**LLAMA_LIKE),
    "mistral": lambda: MistralConfig(**LLAMA_LIKE),
    "gpt2": lambda: GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=INTER,
                               n_positions=64, initializer_range=0.3, **TOKENS),
    "gpt_neox": lambda: GPTNeoXConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                      num_attention_heads=HEADS, intermediate_size=INTER,
                                      max_position_embeddings=128, initializer_range=0.3, **TOKENS),
}
# Gemma 3 as Gemma 3 270M is built, in miniature: head_dim stated apart from hidden / heads (16, not 8), sliding-
# window layers (a window of 4 tokens, shorter than the test texts) around a global one, q/k norms
GEMMA_LAYER_TYPES = ["sliding_attention", "full_attention", "sliding_attention"]
CONFIGS["gemma3_text"] = lambda: Gemma3TextConfig(**{**LLAMA_LIKE, "head_dim": 2 * HEAD_DIM, "query_pre_attn_scalar": 2 * HEAD_DIM,
                                                      "sliding_window": 4, "layer_types": GEMMA_LAYER_TYPES})
ARCHS = list(CONFIGS)


def make_model(arch: str, seed: int = 0):
    """A tiny random model of one family (see CONFIGS), in eval mode."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(CONFIGS[arch]()).eval()
    if arch == "gemma3_text":  # Gemma's norms start at zero weight (a scale of 1 + 0): make them act, q/k norms included
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):
                    p.normal_(0, 0.5)
    return model


def tokenizer(bos: bool = True) -> PreTrainedTokenizerFast:
    """Word-level; with `bos` it prepends <|endoftext|> like the kit's own tokenizer, else adds nothing (GPT-2)."""
    vocab = {"<|endoftext|>": 0, "<|pad|>": 1, "[UNK]": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|pad|>", unk_token="[UNK]", model_max_length=2048)


def llama(seed: int = 0, hidden: int = 32, layers: int = 3):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(WORDS) + 3, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.3,
                         bos_token_id=0, eos_token_id=0, pad_token_id=1, tie_word_embeddings=True)
    return AutoModelForCausalLM.from_config(config).eval()


def gpt2(seed: int = 0, hidden: int = 32, layers: int = 2):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(WORDS) + 3, n_embd=hidden, n_layer=layers, n_head=4, n_positions=64,
                        initializer_range=0.3, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    return AutoModelForCausalLM.from_config(config).eval()


def texts(n: int, seed: int = 0, min_words: int = 5, max_words: int = 30) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(min_words, max_words))) for _ in range(n)]


def domains(n: int) -> list[str]:
    return [DOMAINS[i % len(DOMAINS)] for i in range(n)]
