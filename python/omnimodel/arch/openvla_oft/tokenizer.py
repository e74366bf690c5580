"""Prompt building and tokenisation with a checkpoint's own Llama tokenizer.

Upstream runs ``PrismaticProcessor`` -> ``LlamaTokenizerFast`` (``tokenizer.json``) on
``"In: What action should the robot take to {instruction.lower()}?\\nOut:"`` with the BOS added by the
tokenizer's post-processor, then ``predict_action`` appends the lone "▁" piece (id 29871 in Llama's
vocabulary) unless the prompt already ends with it. We read ``tokenizer.json`` with the ``tokenizers``
library when present, else ``tokenizer.model`` with SentencePiece (the slow Llama tokenizer); for plain
prompts the two agree (the miniature test checks that on its own vocabulary).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .config import ConfigError, PromptConfig


class _Encoder(Protocol):
    def encode_with_bos(self, text: str) -> list[int]: ...
    def piece_id(self, piece: str) -> int | None: ...
    def vocab_size(self) -> int: ...


class _HFTokenizersEncoder:
    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises its own Exception type
            raise ConfigError(f"{path.name}: cannot be read as a tokenizers JSON file: {exc}") from exc

    def encode_with_bos(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=True).ids)

    def piece_id(self, piece: str) -> int | None:
        return self._tok.token_to_id(piece)

    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)


class _SentencePieceEncoder:
    def __init__(self, path: Path, bos_id: int) -> None:
        import sentencepiece as spm

        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.Load(str(path))
        except Exception as exc:
            raise ConfigError(f"{path.name}: cannot be read as a SentencePiece model: {exc}") from exc
        self._bos = bos_id

    def encode_with_bos(self, text: str) -> list[int]:
        return [self._bos] + list(self._sp.EncodeAsIds(text))

    def piece_id(self, piece: str) -> int | None:
        pid = self._sp.PieceToId(piece)
        return None if pid == self._sp.unk_id() and piece != self._sp.IdToPiece(pid) else pid

    def vocab_size(self) -> int:
        return self._sp.GetPieceSize()


@dataclass
class PromptTokenizer:
    encoder: _Encoder
    prompt: PromptConfig
    bos_token_id: int
    empty_piece_id: int
    source: str  # file it was read from

    def prompt_text(self, instruction: str) -> str:
        text = instruction.lower() if self.prompt.lowercase_instruction else instruction
        return self.prompt.template.format(instruction=text)

    def encode_prompt(self, instruction: str) -> list[int]:
        """BOS + prompt tokens (+ "▁"), i.e. upstream's ``input_ids`` right before the action slots."""
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError("instruction must be a non-empty string")
        ids = self.encoder.encode_with_bos(self.prompt_text(instruction))
        if not ids or ids[0] != self.bos_token_id:
            raise ConfigError(f"{self.source}: tokenizer does not start the prompt with BOS id {self.bos_token_id}")
        if self.prompt.append_empty_piece and ids[-1] != self.empty_piece_id:
            ids.append(self.empty_piece_id)
        return ids


def load_prompt_tokenizer(
    checkpoint_dir: Path, prompt: PromptConfig, bos_token_id: int, prefer: str = "tokenizer.json"
) -> PromptTokenizer:
    """Load ``tokenizer.json`` (preferred, what upstream runs) or ``tokenizer.model``."""
    json_path, model_path = checkpoint_dir / "tokenizer.json", checkpoint_dir / "tokenizer.model"
    order = [json_path, model_path] if prefer == "tokenizer.json" else [model_path, json_path]
    for path in order:
        if path.is_file():
            encoder: _Encoder = (
                _HFTokenizersEncoder(path) if path.suffix == ".json" else _SentencePieceEncoder(path, bos_token_id)
            )
            break
    else:
        raise ConfigError(f"{checkpoint_dir}: neither tokenizer.json nor tokenizer.model found")
    empty_id = encoder.piece_id(prompt.empty_piece)
    if empty_id is None:
        raise ConfigError(f"{path.name}: vocabulary has no '{prompt.empty_piece}' piece (Llama id 29871)")
    return PromptTokenizer(
        encoder=encoder, prompt=prompt, bos_token_id=bos_token_id, empty_piece_id=empty_id, source=path.name
    )


__all__ = ["PromptTokenizer", "load_prompt_tokenizer"]
