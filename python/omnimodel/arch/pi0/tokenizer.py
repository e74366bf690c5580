"""The prefix text of pi0 / pi0.5 and its tokenisation with PaliGemma's SentencePiece model.

PaliGemma's tokenizer (``paligemma_tokenizer.model``, 257152 pieces = Gemma's 256000 + 1024 ``<locNNNN>``
+ 128 ``<segNNN>``) has pad 0, eos 1, bos 2, unk 3, no dummy prefix ("hello" -> "hello", not "▁hello"),
byte fallback, digits split one per piece, and "\\n" as a piece of its own. openpi encodes with it
directly (``PaligemmaTokenizer``: ``encode(text, add_bos=True)``); LeRobot runs the Hugging Face copy
(``google/paligemma-3b-pt-224``, add_bos_token=True, add_eos_token=False), which encodes plain prompts to
the same ids.

Prompts (``PromptFormat``):

* pi0, LeRobot:  ``task + "\\n"`` (raw task; ``Pi0NewLineProcessor`` adds the newline) in one call;
* pi0, openpi:   ``encode(clean(task), add_bos) + encode("\\n")``;
* pi0.5 (both):  ``"Task: {clean(task)}, State: {s_1 s_2 ... s_n};\\nAction: "`` where the *normalised*
  state is discretised to 256 bins over [-1, 1]: ``np.digitize(s, linspace(-1, 1, 257)[:-1]) - 1`` (a
  value below -1 gives -1, one at or above 1 - 2/256 gives 255; upstream does not clip).

``clean`` = strip, "_" -> " ", "\\n" -> " ". Upstream pads the ids to ``tokenizer_max_length`` (right,
pad id 0, mask False) and truncates longer prompts; the padded positions are masked out of attention
and do not advance positions, so the reference runs on the unpadded ids by default (``pad=False``)
with the same result, and pads only when asked (the cross-check with LeRobot does).

Real LeRobot checkpoints do not ship the tokenizer (it is fetched by name at run time); we read
``tokenizer.model`` from the checkpoint directory or from a path the caller passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import ConfigError, Layout, PromptFormat

TOKENIZER_FILE = "tokenizer.model"


def discretize_state(state: np.ndarray, bins: int = 256) -> np.ndarray:
    """Normalised state -> integer bins, exactly as openpi / LeRobot (values may be -1 or ``bins - 1``)."""
    edges = np.linspace(-1, 1, bins + 1)[:-1]
    return np.digitize(np.asarray(state), bins=edges) - 1


def clean_task(task: str) -> str:
    return task.strip().replace("_", " ").replace("\n", " ")


def prompt_text(fmt: PromptFormat, task: str, normalized_state: np.ndarray | None = None) -> str:
    """The text upstream tokenises (for pi0/openpi, before the separately encoded "\\n")."""
    if fmt.kind == "pi05":
        if normalized_state is None:
            raise ValueError("pi0.5 needs the normalised state: it is written into the prompt")
        bins = discretize_state(np.asarray(normalized_state).reshape(-1), fmt.state_bins)
        return fmt.pi05_template.format(task=clean_task(task), state=" ".join(map(str, bins)))
    if fmt.layout is Layout.OPENPI:
        return clean_task(task)
    return task if task.endswith("\n") else task + "\n"


@dataclass
class TokenizedPrompt:
    ids: list[int]  # BOS first; padded to max_length with pad ids when padding was asked for
    mask: list[bool]  # False on padding
    text: str  # what was tokenised (pi0/openpi: without the separate "\n")
    truncated: bool


class PaliGemmaTokenizer:
    """SentencePiece model with PaliGemma's conventions (checked on load)."""

    def __init__(self, path: str | Path, bos_id: int = 2, pad_id: int = 0) -> None:
        import sentencepiece as spm

        self.path = Path(path)
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.Load(str(self.path))
        except Exception as exc:  # sentencepiece raises OSError / RuntimeError
            raise ConfigError(f"{self.path.name}: cannot be read as a SentencePiece model: {exc}") from exc
        if self._sp.bos_id() != bos_id or self._sp.pad_id() != pad_id:
            raise ConfigError(
                f"{self.path.name}: bos/pad ids are {self._sp.bos_id()}/{self._sp.pad_id()}, PaliGemma's are "
                f"{bos_id}/{pad_id}"
            )
        self.bos_id, self.pad_id = bos_id, pad_id

    def vocab_size(self) -> int:
        return self._sp.GetPieceSize()

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = list(self._sp.EncodeAsIds(text))
        return [self.bos_id] + ids if add_bos else ids

    def decode(self, ids: list[int]) -> str:
        return self._sp.DecodeIds(ids)

    def tokenize(
        self,
        fmt: PromptFormat,
        task: str,
        normalized_state: np.ndarray | None = None,
        *,
        max_length: int,
        pad: bool = False,
    ) -> TokenizedPrompt:
        if not isinstance(task, str) or not task.strip():
            raise ValueError("the instruction must be a non-empty string")
        text = prompt_text(fmt, task, normalized_state)
        ids = self.encode(text, add_bos=True)
        if fmt.kind == "pi0" and fmt.layout is Layout.OPENPI:
            ids += self.encode("\n")  # openpi: the "start of answer" newline, tokenised on its own
        truncated = len(ids) > max_length
        ids = ids[:max_length]
        mask = [True] * len(ids)
        if pad and len(ids) < max_length:
            mask += [False] * (max_length - len(ids))
            ids += [self.pad_id] * (max_length - len(ids))
        return TokenizedPrompt(ids=ids, mask=mask, text=text, truncated=truncated)


def load_tokenizer(checkpoint_dir: Path, tokenizer: str | Path | None = None) -> PaliGemmaTokenizer:
    path = Path(tokenizer) if tokenizer is not None else checkpoint_dir / TOKENIZER_FILE
    if not path.is_file():
        raise ConfigError(
            f"{path}: no PaliGemma tokenizer (LeRobot checkpoints name 'google/paligemma-3b-pt-224' and fetch it at "
            f"run time); pass tokenizer= the path of its {TOKENIZER_FILE}"
        )
    return PaliGemmaTokenizer(path)


__all__ = [
    "TOKENIZER_FILE",
    "PaliGemmaTokenizer",
    "TokenizedPrompt",
    "clean_task",
    "discretize_state",
    "load_tokenizer",
    "prompt_text",
]
