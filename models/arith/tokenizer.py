"""A character-level tokenizer (one token per printable ASCII character) in Hugging Face format.

vLLM and ``transformers.AutoTokenizer`` load it from ``tokenizer.json`` + ``tokenizer_config.json``.
Two properties matter for serving:

- the post-processor adds ``<bos>`` itself, so prompts sent to vLLM start with the BOS the model
  was trained with (without it greedy accuracy collapses);
- the decoder concatenates tokens (``Fuse``), so decoding gives back the exact characters.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

PAD = "<pad>"
BOS = "<bos>"
EOS = "<eos>"
UNK = "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)

# Every printable ASCII character but the rarely useful \t \r \x0b \x0c, plus newline: the task
# uses digits, "+-=# :QA", and prompts of other strategies (e.g. "Wait") still tokenize.
CHARACTERS = tuple(sorted(set(string.printable) - set("\t\r\x0b\x0c")))


def vocabulary() -> dict[str, int]:
    """Token → id: the special tokens first (pad=0, bos=1, eos=2, unk=3), then characters."""
    tokens = [*SPECIAL_TOKENS, *CHARACTERS]
    return {token: index for index, token in enumerate(tokens)}


VOCAB = vocabulary()
PAD_ID = VOCAB[PAD]
BOS_ID = VOCAB[BOS]
EOS_ID = VOCAB[EOS]
UNK_ID = VOCAB[UNK]
VOCAB_SIZE = len(VOCAB)


def build_tokenizer() -> Tokenizer:
    """The ``tokenizers`` object: every character is a word of a WordLevel model."""
    tokenizer = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A $B",
        special_tokens=[(BOS, BOS_ID)],
    )
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer


# Chat messages in the task's format: a user message is the bare question ("23+48-17") and
# becomes "Q:23+48-17 A:"; an assistant message is the completion so far, so a final one is
# continued (vLLM's `continue_final_message`), as beam search needs. System messages are dropped.
# vLLM tokenizes chat prompts without special tokens, hence the explicit BOS.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}Q:{{ message['content'] | trim }} A:"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] }}"
    "{% if not loop.last %}{{ eos_token }}{% endif %}{% endif %}"
    "{% endfor %}"
)


def tokenizer_config() -> dict[str, object]:
    """``tokenizer_config.json`` for ``PreTrainedTokenizerFast``."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": UNK,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 512,
        "padding_side": "left",
        "chat_template": CHAT_TEMPLATE,
    }


def save_tokenizer(out_dir: Path) -> None:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    build_tokenizer().save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2) + "\n")
    special_tokens = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "unk_token": UNK}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_tokens, indent=2) + "\n")


def encode(text: str) -> list[int]:
    """Token ids of ``text`` with the leading BOS, as vLLM will see them (no EOS)."""
    return [BOS_ID, *(VOCAB.get(char, UNK_ID) for char in text)]


ID_TO_TOKEN = {index: token for token, index in VOCAB.items()}


def decode(ids: list[int]) -> str:
    """The characters of ``ids`` up to the first ``<eos>``, special tokens dropped."""
    characters = []
    for index in ids:
        if index == EOS_ID:
            break
        if index not in (PAD_ID, BOS_ID, UNK_ID):
            characters.append(ID_TO_TOKEN[index])
    return "".join(characters)
