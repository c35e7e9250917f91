"""Random-weight stand-ins for the two checkpoints, saved in the same classes and files as the real ones.

Used by the tests and the benchmark (nothing can be downloaded there): ``save_random_models(root)`` writes

    root/captioner/   BlipForConditionalGeneration + BlipProcessor (BlipImageProcessor + BERT WordPiece)
    root/storyteller/ GPTNeoForCausalLM + GPT-2 byte-level BPE tokenizer (<|endoftext|> = bos = eos = unk)

and ``save_random_narrator(folder)`` a VitsModel + VitsTokenizer (characters, as MMS-TTS's) for narration.

so ``ImageStoryGenerator(caption_model=root / "captioner", story_model=root / "storyteller")`` loads them
exactly as it loads ``Salesforce/blip-image-captioning-base`` and ``roneneldan/TinyStories-33M``.
``size="real"`` gives the real architectures (BLIP base at 384×384, GPT-Neo 768×4 of TinyStories-33M with
the 50,257-token vocabulary) for timing on a GPU; ``size="tiny"`` is a few hundred thousand parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

WORDS = (  # noqa: SIM905
    "a an the of on in with and at by to is are dog cat man woman girl boy child bird flower tree "
    "house street city mountain river sea beach sky cloud sun red blue green yellow white black small "
    "big two three sitting standing walking running playing lying near next front top group people car "
    "bike boat train table chair bed window door field grass snow water road park garden temple roof"
).split()

STORY_TEXT = (
    "Once upon a time, there was a little girl named Lily. She liked to play in the park with her dog. "
    "One day, the sun was bright and the sky was blue. Lily saw a big red flower near a tree. "
    'She said, "Look, Max! It is so pretty!" The dog wagged his tail and ran to the river. '
    "They were happy and they played all day. The end. "
    "This is a story about a temple on a mountain. One day, a boy and his mom went to see it. "
)


def _blip_processor():
    from transformers import BertTokenizerFast, BlipImageProcessor, BlipProcessor

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "[DEC]"]  # BLIP decodes from [DEC]
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, bos_token="[DEC]")
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    return BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _gpt2_tokenizer(vocab_size: int):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([STORY_TEXT] * 4, vocab_size=vocab_size, special_tokens=["<|endoftext|>"])
    return GPT2TokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=2048,
    )


def save_random_models(root: Path, *, size: Literal["tiny", "real"] = "tiny", seed: int = 0) -> Path:
    """Write a random captioner and storyteller under ``root``; returns ``root``."""
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipTextConfig,
        BlipVisionConfig,
        GPTNeoConfig,
        GPTNeoForCausalLM,
    )

    root = Path(root)
    cap_dir, story_dir = root / "captioner", root / "storyteller"
    cap_dir.mkdir(parents=True, exist_ok=True)
    story_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    #### Captioner ####
    processor = _blip_processor()
    vocab = len(processor.tokenizer)
    dec_id = processor.tokenizer.convert_tokens_to_ids("[DEC]")
    sep_id = processor.tokenizer.sep_token_id
    if size == "real":
        processor.image_processor.size = {"height": 384, "width": 384}
        text = BlipTextConfig(vocab_size=30524, bos_token_id=30522, sep_token_id=102)
        cfg = BlipConfig(text_config=text.to_dict(), vision_config=BlipVisionConfig(image_size=384).to_dict())
    else:
        hidden = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
        vision = BlipVisionConfig(image_size=32, patch_size=16, **hidden)
        text = BlipTextConfig(
            vocab_size=vocab,
            encoder_hidden_size=32,
            max_position_embeddings=64,
            bos_token_id=dec_id,
            sep_token_id=sep_id,
            pad_token_id=0,
            **hidden,
        )
        cfg = BlipConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=32)
    BlipForConditionalGeneration(cfg).eval().save_pretrained(cap_dir)
    processor.save_pretrained(cap_dir)

    #### Storyteller ####
    tokenizer = _gpt2_tokenizer(vocab_size=400)
    eos = tokenizer.eos_token_id
    if size == "real":  # roneneldan/TinyStories-33M
        neo = GPTNeoConfig(
            vocab_size=50257,
            max_position_embeddings=2048,
            hidden_size=768,
            num_layers=4,
            num_heads=16,
            attention_types=[[["global", "local"], 2]],
            window_size=256,
            bos_token_id=eos,
            eos_token_id=eos,
        )
    else:
        neo = GPTNeoConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=512,
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            attention_types=[[["global", "local"], 1]],
            window_size=16,
            bos_token_id=eos,
            eos_token_id=eos,
        )
    GPTNeoForCausalLM(neo).eval().save_pretrained(story_dir)
    tokenizer.save_pretrained(story_dir)
    return root


def save_random_narrator(folder: Path, *, speakers: int = 1, seed: int = 0) -> Path:
    """A tiny random VITS text-to-speech model (MMS-TTS's classes and files: a character vocabulary, no
    phonemizer) at 8 kHz, with ``speakers`` voices; a few tens of thousands of parameters."""
    import json

    from transformers import VitsConfig, VitsModel, VitsTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = ["<pad>", *" abcdefghijklmnopqrstuvwxyz'.,!?-"]
    vocab_file = folder / "vocab.json"
    vocab_file.write_text(json.dumps({c: i for i, c in enumerate(chars)}))
    tokenizer = VitsTokenizer(str(vocab_file), pad_token="<pad>", unk_token="<pad>", phonemize=False)
    cfg = VitsConfig(
        vocab_size=len(chars),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
        flow_size=16,
        spectrogram_bins=17,
        upsample_initial_channel=16,
        upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        prior_encoder_num_flows=2,
        prior_encoder_num_wavenet_layers=1,
        posterior_encoder_num_wavenet_layers=1,
        duration_predictor_filter_channels=16,
        depth_separable_num_layers=2,
        num_speakers=speakers,
        speaker_embedding_size=8 if speakers > 1 else 0,
        sampling_rate=8000,
    )
    torch.manual_seed(seed)
    VitsModel(cfg).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
