"""A tiny model snapshot for the tests that run the real Dynamo frontend: the files it and the worker read (config,
generation config, tokenizer, chat template) and no weights, so nothing is downloaded.

The tokenizer is a byte-level BPE written here as tokenizer.json, deterministic: the 256 byte symbols, then merges of
two symbols of [A-Za-z0-9] and of a space with a letter, up to ORDINARY ids, then the special tokens. Dynamo's
frontend wants ids up to about 2048 to decode (its mocker emits ids that high), hence VOCAB_SIZE.

    snapshot = put_in_hf_cache(hf_home, "Qwen/Qwen3-8B")   # or write_model(directory)
"""

import hashlib
import json
import os
import pathlib
import string

VOCAB_SIZE = 2048
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")
ORDINARY = VOCAB_SIZE - len(SPECIAL_TOKENS)  # ids below are ordinary tokens, the specials follow
BOS, EOS, PAD = "<|endoftext|>", "<|im_end|>", "<|pad|>"
MAX_POSITIONS = 8192
CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")


def _byte_symbols():
    """GPT-2's byte-to-unicode table, which ByteLevel pre-tokenizers and decoders use: printable bytes stand for
    themselves, the others for 256 + n."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return symbols


def vocabulary():
    """(vocab {token: id}, merges [[left, right]]): the ordinary tokens, specials excluded."""
    symbols = _byte_symbols()
    vocab = {symbols[byte]: byte for byte in range(256)}
    merges = []
    space = symbols[ord(" ")]
    alphabet = string.ascii_letters + string.digits
    pairs = [(space, c) for c in string.ascii_letters] + [(a, b) for a in alphabet for b in alphabet]
    for left, right in pairs:
        if len(vocab) == ORDINARY:
            break
        vocab[left + right] = len(vocab)
        merges.append([left, right])
    return vocab, merges


def tokenizer_json():
    vocab, merges = vocabulary()
    added = [{"id": ORDINARY + i, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, token in enumerate(SPECIAL_TOKENS)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def token_id(token):
    return ORDINARY + SPECIAL_TOKENS.index(token)


def model_files():
    """{file name: JSON document} of the snapshot."""
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": VOCAB_SIZE,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "bos_token_id": token_id(BOS),
        "eos_token_id": token_id(EOS),
    }
    generation = {"bos_token_id": token_id(BOS), "eos_token_id": [token_id(EOS), token_id(BOS)],
                  "pad_token_id": token_id(PAD), "do_sample": False}
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MAX_POSITIONS,
        "chat_template": CHAT_TEMPLATE,
    }
    return {"config.json": config, "generation_config.json": generation, "tokenizer.json": tokenizer_json(),
            "tokenizer_config.json": tokenizer_config}


def _contents():
    return {name: (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
            for name, document in model_files().items()}


def write_model(directory):
    """Write the snapshot's files into `directory` (made if missing); returns its path."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in _contents().items():
        (directory / name).write_bytes(content)
    return directory


def _git_blob_id(content):
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def default_commit():
    """A commit id for the snapshot: a hash of its files, so the same files give the same commit."""
    digest = hashlib.sha1()
    for name, content in sorted(_contents().items()):
        digest.update(name.encode() + b"\0" + _git_blob_id(content).encode())
    return digest.hexdigest()


def put_in_hf_cache(hf_home, repo_id, revision="main", commit=None):
    """Lay the snapshot out as huggingface_hub's cache does under HF_HOME: hub/models--Org--Name/ with
    refs/<revision> holding the commit, blobs/<git blob id> the files (not kept in LFS, so named by their git blob
    id, as the Hub's ETag gives it) and snapshots/<commit>/<file> relative links to them. `commit` defaults to
    default_commit(). Returns the snapshot directory, what a worker is given as its model path."""
    commit = commit or default_commit()
    repo = pathlib.Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, content in _contents().items():
        blob = repo / "blobs" / _git_blob_id(content)
        blob.write_bytes(content)
        link = snapshot / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs" / revision).write_text(commit)  # no newline, as huggingface_hub writes it
    return snapshot
