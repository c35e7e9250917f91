"""Narration: a story read aloud by a text-to-speech model of the VITS family (MMS-TTS) through transformers'
``text-to-speech`` pipeline, written as a 16-bit PCM WAV by the standard library.

    from lab3_story.narration import Narrator, write_wav
    narrator = Narrator("facebook/mms-tts-eng")      # one voice; multi-speaker VITS models offer several
    audio, rate = narrator.read_aloud(["Once upon a time, …"], voice=0, seed=0)
    write_wav("story.wav", audio, rate)

A story is read a few sentences at a time (VITS attends over its whole input; short pieces keep memory flat),
the pieces joined with a short pause, several stories with a longer one. VITS draws noise for its durations and
waveform: the same seed gives the same audio. Latin-script English models need nothing beyond transformers; a
model whose tokenizer romanizes (``is_uroman``) or phonemizes its text needs the ``narrate`` extra.
"""

from __future__ import annotations

import importlib.util
import re
import threading
import wave
from pathlib import Path
from typing import Any

import numpy as np

from dla_core.errors import DlaError

SENTENCE_PAUSE = 0.15  # seconds of silence between pieces of one story
STORY_PAUSE = 0.8  # seconds of silence between stories
PIECE_CHARS = 300  # sentences are grouped up to about this many characters per pipeline call
EXTRA = "pip install dla-lab3[narrate]"


def _needed_packages(model: str) -> list[str]:
    """The packages the model's tokenizer calls on (from its tokenizer_config.json, if there is one here)."""
    import json

    from transformers.utils import cached_file

    try:
        path = cached_file(model, "tokenizer_config.json", _raise_exceptions_for_missing_entries=False)
    except OSError:
        return []
    if not path:
        return []
    settings = json.loads(Path(path).read_text())
    needed = []
    if settings.get("is_uroman"):
        needed.append("uroman")
    if settings.get("phonemize"):
        needed.append("phonemizer")
    return needed


class Narrator:
    """A text-to-speech pipeline, loaded once; ``voices`` are its speaker ids (one where it has no speakers)."""

    def __init__(self, model: str, *, device: Any = "cpu") -> None:
        from transformers import pipeline

        missing = [p for p in _needed_packages(model) if importlib.util.find_spec(p) is None]
        if missing:
            raise DlaError(f"--narrator-model {model} needs {' and '.join(missing)}: {EXTRA}")
        try:
            self.pipe = pipeline("text-to-speech", model=model, device=device)
        except (OSError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DlaError(f"--narrator-model {model}: cannot load ({first})") from None
        self.model = model
        self.speakers = int(getattr(self.pipe.model.config, "num_speakers", 1) or 1)
        self.rate = int(self.pipe.model.config.sampling_rate)
        self._lock = threading.Lock()  # one reading at a time: the seed and the model are shared

    @property
    def voices(self) -> list[int]:
        return list(range(self.speakers))

    def check_voice(self, voice: int) -> int:
        if voice not in self.voices:
            has = "one voice (0)" if self.speakers == 1 else f"voices 0 to {self.speakers - 1}"
            raise DlaError(f"--voice {voice}: the narrator {self.model} has {has}")
        return voice

    def speak(self, text: str, voice: int = 0) -> np.ndarray:
        """One piece of text → float32 samples at ``self.rate``."""
        params = {"speaker_id": voice} if self.speakers > 1 else {}
        out = self.pipe(text, forward_params=params)
        return np.asarray(out["audio"], dtype=np.float32).reshape(-1)

    def read_aloud(self, stories: list[str], voice: int = 0, seed: int | None = 0) -> tuple[np.ndarray, int]:
        """Every story read in turn → (float32 samples, sampling rate)."""
        self.check_voice(voice)
        parts: list[np.ndarray] = []
        with self._lock:
            if seed is not None:
                from dla_core.seeding import seed_everything

                seed_everything(seed)
            for i, story in enumerate(stories):
                if i:
                    parts.append(self._silence(STORY_PAUSE))
                for j, piece in enumerate(pieces(story)):
                    if j:
                        parts.append(self._silence(SENTENCE_PAUSE))
                    parts.append(self.speak(piece, voice))
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return audio, self.rate

    def _silence(self, seconds: float) -> np.ndarray:
        return np.zeros(int(seconds * self.rate), np.float32)


def pieces(story: str, limit: int = PIECE_CHARS) -> list[str]:
    """The story's sentences grouped into pieces of at most about ``limit`` characters (a longer sentence is one
    piece of its own); nothing for a blank story."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", " ".join(story.split())) if s]
    out: list[str] = []
    for s in sentences:
        if out and len(out[-1]) + 1 + len(s) <= limit:
            out[-1] += " " + s
        else:
            out.append(s)
    return out


def write_wav(path: str | Path, audio: np.ndarray, rate: int) -> Path:
    """Mono 16-bit PCM; samples are clipped to [-1, 1]."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    path = Path(path)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())
    return path
