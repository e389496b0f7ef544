"""Tiny random-weight Mixtral models, as a transformers checkpoint and as the same weights in GGUF.

The real Chinese-Mixtral models are 25-87 GB and cannot be downloaded where the tests run. What the
package must get right does not depend on the weights being trained: the chat template, special
tokens, BOS handling, byte-fallback tokens that split Chinese characters, the trained context length
and the expert routing are all properties of the files. So tests and benchmarks build a model with
the real architecture (Mixtral: Llama attention + top-k routed SwiGLU experts) and a real
SentencePiece BPE tokenizer trained in a few milliseconds, and write it twice:

* ``hf_dir``: what ``save_pretrained`` writes, loadable offline with ``AutoTokenizer`` and
  ``AutoModelForCausalLM``;
* ``gguf_path``: the same f32 weights in the layout llama.cpp's ``convert_hf_to_gguf.py`` produces
  for Mixtral (architecture ``llama`` with expert metadata), so both backends compute the same
  logits and tokenize the same text into the same ids.

Heavy libraries (torch, transformers, sentencepiece) are imported inside the functions that need
them, so importing :mod:`chinese_mixtral_rag.testing` is cheap.
"""

from __future__ import annotations

import io
import json
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chinese_mixtral_rag.chat_template import MIXTRAL_INSTRUCT_TEMPLATE
from chinese_mixtral_rag.testing.corpus import training_lines

if TYPE_CHECKING:
    from numpy.typing import NDArray

    Array = NDArray[np.float32]

__all__ = [
    "CHATML",
    "CHATML_TEMPLATE",
    "MIXTRAL_INSTRUCT_TEMPLATE",
    "SMALL",
    "TINY",
    "TinyModel",
    "TinyModelSpec",
    "build_tiny_mixtral",
    "write_gguf_with_architecture",
]

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
RMS_NORM_EPS = 1e-5
GGUF_FILE_NAME = "tiny-mixtral-f32.gguf"
HF_DIR_NAME = "hf"
SPIECE_UNDERLINE = "▁"

#: Characters that must be whole pieces whatever the corpus frequency, so ASCII text and the
#: full-width punctuation of Chinese prose never fall back to bytes (as in the real vocabulary).
_REQUIRED_CHARS = (
    "".join(c for c in string.printable if not c.isspace()) + "，。！？；：“”‘’（）《》、…—"
)


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape and options of a tiny Mixtral; defaults mirror Chinese-Mixtral where it matters."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    num_experts: int = 4
    experts_per_token: int = 2
    #: Trained context written to config.json and GGUF; 32K like Chinese-Mixtral, so code that
    #: sizes the window from the model's metadata sees the real value.
    context_length: int = 32768
    rope_theta: float = 1e6
    #: SentencePiece target size, byte-fallback pieces and ``<unk> <s> </s>`` included. The corpus
    #: needs about 1000 for its characters and supports a few thousand.
    vocab_size: int = 1200
    seed: int = 0
    #: Zero the EOS row of ``lm_head``. Random weights would otherwise end generation at a random
    #: step (sometimes the first), and tests that check streamed, non-empty answers would flake.
    #: EOS then has logit exactly 0, below the maximum of the other ~1200 random logits, so greedy
    #: decoding never stops early while sampling still can.
    suppress_eos: bool = True
    #: ``None`` builds a base-model-like checkpoint (like ``hfl/chinese-mixtral``) with no template.
    chat_template: str | None = MIXTRAL_INSTRUCT_TEMPLATE
    #: The texts of BOS (id 1) and EOS (id 2); other models spell them otherwise
    #: (``<|begin_of_text|>``), and a chat template must get the model's own.
    bos_token: str = BOS
    eos_token: str = EOS
    #: Control tokens appended after the trained vocabulary (ChatML's ``<|im_start|>``...).
    extra_special_tokens: tuple[str, ...] = ()
    #: One of ``extra_special_tokens`` that ends a turn besides EOS, declared as a real chat model
    #: declares it: GGUF ``tokenizer.ggml.eot_token_id``, a list ``eos_token_id`` in the HF
    #: generation config. ``suppress_eos`` zeroes its ``lm_head`` row too.
    end_of_turn: str | None = None

    @property
    def head_dim(self) -> int:
        """Width of one attention head; RoPE rotates all of it."""
        return self.hidden_size // self.num_heads


#: The default test model: builds in well under a second.
TINY = TinyModelSpec()
#: A ChatML-style template that writes the model's own BOS (``{{ bos_token }}``) and ends every turn
#: with ``<|im_end|>``.
CHATML_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
#: A tiny model that is not Mixtral-Instruct in its tokens: other BOS/EOS texts, ChatML's turn
#: tokens, ``<|im_end|>`` ending turns beside EOS (as Qwen or Llama 3 chat models do).
CHATML = TinyModelSpec(
    chat_template=CHATML_TEMPLATE,
    bos_token="<|begin_of_text|>",
    eos_token="<|end_of_text|>",
    extra_special_tokens=("<|im_start|>", "<|im_end|>"),
    end_of_turn="<|im_end|>",
)
#: A larger model for benchmarks where compute, not overhead, should dominate.
SMALL = TinyModelSpec(
    hidden_size=256,
    intermediate_size=512,
    num_layers=4,
    num_heads=8,
    num_kv_heads=4,
    num_experts=8,
)


@dataclass(frozen=True)
class TinyModel:
    """Where a built tiny model lives; both files hold the same weights and tokenizer."""

    hf_dir: Path
    gguf_path: Path
    spec: TinyModelSpec

    def token_id(self, text: str) -> int:
        """The id of one of the spec's special tokens (BOS, EOS, an extra one)."""
        return _special_id(self.spec, text)


def _special_id(spec: TinyModelSpec, text: str) -> int:
    if text == spec.bos_token:
        return BOS_ID
    if text == spec.eos_token:
        return EOS_ID
    return spec.vocab_size + spec.extra_special_tokens.index(text)  # after the trained pieces


@dataclass(frozen=True)
class _Vocab:
    """The trained tokenizer: serialized SentencePiece model and its pieces in id order."""

    model_proto: bytes
    pieces: list[str]
    scores: list[float]
    token_types: list[int]


@dataclass(frozen=True)
class _Layer:
    """One decoder layer in HF orientation (``out_features x in_features``), experts stacked."""

    attn_norm: Array
    q: Array
    k: Array
    v: Array
    o: Array
    ffn_norm: Array
    router: Array  # (experts, hidden)
    gate: Array  # (experts, intermediate, hidden)  w1
    up: Array  # (experts, intermediate, hidden)    w3
    down: Array  # (experts, hidden, intermediate)  w2


@dataclass(frozen=True)
class _Weights:
    """All weights of the model, independent of how either file format names or lays them out."""

    embed: Array
    layers: list[_Layer]
    norm: Array
    lm_head: Array


def build_tiny_mixtral(out_dir: Path, spec: TinyModelSpec = TINY) -> TinyModel:
    """Build a random-weight Mixtral under ``out_dir`` as an HF checkpoint and an f32 GGUF file.

    Deterministic for a given ``spec`` (tokenizer training and weights are seeded), so both
    backends and repeated builds agree. Needs the ``transformers`` extra (torch, transformers,
    sentencepiece).
    """
    if spec.hidden_size % spec.num_heads or spec.num_heads % spec.num_kv_heads:
        raise ValueError(
            f"invalid tiny model shape: hidden_size={spec.hidden_size}, num_heads={spec.num_heads},"
            f" num_kv_heads={spec.num_kv_heads}; hidden_size must divide by num_heads and"
            " num_heads by num_kv_heads"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = _train_tokenizer(spec)
    weights = _random_weights(spec, len(vocab.pieces))

    hf_dir = out_dir / HF_DIR_NAME
    _save_hf_model(hf_dir, spec, weights, len(vocab.pieces))
    _save_hf_tokenizer(hf_dir, spec, vocab)

    gguf_path = out_dir / GGUF_FILE_NAME
    _write_gguf(gguf_path, spec, weights, vocab)
    return TinyModel(hf_dir=hf_dir, gguf_path=gguf_path, spec=spec)


def write_gguf_with_architecture(path: Path, architecture: str) -> Path:
    """Write a small, valid GGUF file whose ``general.architecture`` is ``architecture``.

    For tests of the "this is not a Mixtral/Llama model" error path: the file parses with
    ``gguf.GGUFReader`` but holds no usable model.
    """
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name(f"tiny-{architecture}-placeholder")
    writer.add_context_length(4096)
    writer.add_embedding_length(8)
    writer.add_block_count(1)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    _flush(writer)
    return path


# --- tokenizer -----------------------------------------------------------------------------------


def _train_tokenizer(spec: TinyModelSpec) -> _Vocab:
    """Train a SentencePiece BPE model in memory with the Mistral/Llama tokenizer's options;
    the spec's extra special tokens follow as control tokens."""
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_lines()),
        model_writer=buffer,
        model_type="bpe",
        vocab_size=spec.vocab_size,
        byte_fallback=True,
        split_digits=True,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        pad_id=-1,
        unk_piece=UNK,
        bos_piece=spec.bos_token,
        eos_piece=spec.eos_token,
        character_coverage=0.9995,
        required_chars=_REQUIRED_CHARS,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        split_by_unicode_script=True,
        max_sentencepiece_length=16,
        num_threads=1,
        minloglevel=2,
    )
    proto = buffer.getvalue()
    processor = spm.SentencePieceProcessor(model_proto=proto)

    import gguf

    pieces: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    for token_id in range(processor.get_piece_size()):
        pieces.append(processor.id_to_piece(token_id))
        scores.append(float(processor.get_score(token_id)))
        if processor.is_unknown(token_id):
            kind = gguf.TokenType.UNKNOWN
        elif processor.is_control(token_id):
            kind = gguf.TokenType.CONTROL
        elif processor.is_byte(token_id):
            kind = gguf.TokenType.BYTE
        elif processor.is_unused(token_id):
            kind = gguf.TokenType.UNUSED
        else:
            kind = gguf.TokenType.NORMAL
        types.append(int(kind))
    for extra in spec.extra_special_tokens:
        pieces.append(extra)
        scores.append(0.0)
        types.append(int(gguf.TokenType.CONTROL))
    return _Vocab(model_proto=proto, pieces=pieces, scores=scores, token_types=types)


def _bpe_merges(vocab: _Vocab) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece's score-ordered merging.

    SentencePiece (and llama.cpp) repeatedly merge the adjacent pair whose concatenation is the
    best-scoring piece; a ``tokenizers`` BPE model needs that as ranked pairs. Every split of every
    normal piece into two known pieces becomes a merge, ranked by the merged piece's id (ids are
    in score order), as transformers' SentencePiece converter does.
    """
    import gguf

    normal = int(gguf.TokenType.NORMAL)
    index = {
        piece: i
        for i, (piece, kind) in enumerate(zip(vocab.pieces, vocab.token_types, strict=True))
        if kind == normal
    }
    ranked: list[tuple[int, int, int, str, str]] = []
    for piece, piece_id in index.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in index and right in index:
                ranked.append((piece_id, len(left), len(right), left, right))
    ranked.sort()
    return [(left, right) for _, _, _, left, right in ranked]


def _save_hf_tokenizer(hf_dir: Path, spec: TinyModelSpec, vocab: _Vocab) -> None:
    """Write ``tokenizer.model``, ``tokenizer.json`` and ``tokenizer_config.json``.

    The ``tokenizers`` pipeline reproduces llama.cpp's SentencePiece tokenizer exactly: each text
    fragment between special tokens gets one ``▁`` prepended and every space becomes ``▁`` (a
    ``Prepend`` + ``Replace`` normalizer), then score-ordered BPE with byte fallback. transformers'
    own ``LlamaTokenizer`` cannot be used for this: it rebuilds the pipeline from the vocabulary
    with a ``Metaspace`` pre-tokenizer, which skips the prefix when a fragment already starts with
    a space (``" x"`` gives ``▁x`` where llama.cpp gives ``▁▁x``) and, unless ``legacy`` is set,
    adds it to the first fragment only (``<s>[INST]`` then differs too). So the config names the
    generic ``PreTrainedTokenizerFast``, which loads ``tokenizer.json`` as written.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(
        BPE(
            vocab={piece: i for i, piece in enumerate(vocab.pieces)},
            merges=_bpe_merges(vocab),
            unk_token=UNK,
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    backend.normalizer = normalizers.Sequence(
        [normalizers.Prepend(SPIECE_UNDERLINE), normalizers.Replace(" ", SPIECE_UNDERLINE)]
    )
    backend.pre_tokenizer = None
    backend.decoder = decoders.Sequence(
        [
            decoders.Replace(SPIECE_UNDERLINE, " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(content=" ", left=1, right=0),
        ]
    )
    bos, eos, extras = spec.bos_token, spec.eos_token, list(spec.extra_special_tokens)
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in (UNK, bos, eos, *extras)]
    )
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0",
        pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
        special_tokens=[(bos, BOS_ID)],
    )
    named: dict[str, Any] = {"extra_special_tokens": extras} if extras else {}
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        unk_token=UNK,
        bos_token=bos,
        eos_token=eos,
        pad_token=UNK,
        **named,
        clean_up_tokenization_spaces=False,
        model_max_length=spec.context_length,
    )
    tokenizer.save_pretrained(str(hf_dir))
    (hf_dir / "tokenizer.model").write_bytes(vocab.model_proto)

    # One source of truth for the template, in tokenizer_config.json as in the released
    # checkpoints (transformers 5 would otherwise write chat_template.jinja). add_bos_token and
    # add_eos_token are informational for readers of the file: transformers 5 takes BOS handling
    # from the post-processor in tokenizer.json (and then reports ``add_bos_token`` as False).
    (hf_dir / "chat_template.jinja").unlink(missing_ok=True)
    config_path = hf_dir / "tokenizer_config.json"
    config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(
        tokenizer_class="PreTrainedTokenizerFast",
        add_bos_token=True,
        add_eos_token=False,
        bos_token=bos,
        eos_token=eos,
        unk_token=UNK,
        pad_token=UNK,
        padding_side="left",
    )
    config.pop("chat_template", None)
    if spec.chat_template is not None:
        config["chat_template"] = spec.chat_template
    config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", "utf-8")


# --- weights -------------------------------------------------------------------------------------


def _random_weights(spec: TinyModelSpec, n_vocab: int) -> _Weights:
    """Seeded weights scaled so every part of the network visibly affects the logits.

    Linear weights have std ``1/sqrt(fan_in)`` (attention scores, router logits and output logits
    all of order 1), so a wrong RoPE permutation, a swapped gate/up projection or a misrouted
    expert changes the logits far beyond float error, and greedy decoding has clear margins.
    Norm weights are drawn around 1 so a misplaced norm is caught too.
    """
    rng = np.random.default_rng(spec.seed)
    h, ff, e = spec.hidden_size, spec.intermediate_size, spec.num_experts
    kv = spec.num_kv_heads * spec.head_dim

    def linear(*shape: int) -> Array:
        weight: Array = (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
        return weight

    def norm() -> Array:
        return rng.uniform(0.8, 1.2, size=h).astype(np.float32)

    embed = rng.standard_normal((n_vocab, h)).astype(np.float32)
    layers = [
        _Layer(
            attn_norm=norm(),
            q=linear(h, h),
            k=linear(kv, h),
            v=linear(kv, h),
            o=linear(h, h),
            ffn_norm=norm(),
            router=linear(e, h),
            gate=linear(e, ff, h),
            up=linear(e, ff, h),
            down=linear(e, h, ff),
        )
        for _ in range(spec.num_layers)
    ]
    final_norm = norm()
    lm_head = linear(n_vocab, h)
    if spec.suppress_eos:
        lm_head[EOS_ID] = 0.0
        if spec.end_of_turn is not None:
            lm_head[_special_id(spec, spec.end_of_turn)] = 0.0
    return _Weights(embed=embed, layers=layers, norm=final_norm, lm_head=lm_head)


def _save_hf_model(hf_dir: Path, spec: TinyModelSpec, weights: _Weights, n_vocab: int) -> None:
    """Save the weights with ``MixtralForCausalLM.save_pretrained`` (f32 safetensors)."""
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM
    from transformers.utils import logging as hf_logging

    config = MixtralConfig(
        vocab_size=n_vocab,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.head_dim,
        num_local_experts=spec.num_experts,
        num_experts_per_tok=spec.experts_per_token,
        max_position_embeddings=spec.context_length,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
        rms_norm_eps=RMS_NORM_EPS,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=UNK_ID,
        tie_word_embeddings=False,
        sliding_window=None,
        dtype="float32",
    )
    # The constructor's random init is replaced below; fork_rng keeps it from advancing the
    # caller's global torch RNG, so building a model does not change other tests' randomness.
    with torch.random.fork_rng(devices=[]):
        model = MixtralForCausalLM(config)
    state = _hf_state_dict(weights, model.state_dict().keys())
    # assign=True: the parameters become these f32 tensors whatever torch's default dtype is.
    model.load_state_dict(
        {k: torch.from_numpy(v) for k, v in state.items()}, strict=True, assign=True
    )
    # A one-shard "Writing model shards" bar per build is noise in test and benchmark output.
    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    if spec.end_of_turn is not None:  # as chat models declare it: generation ends on either
        model.generation_config.eos_token_id = [EOS_ID, _special_id(spec, spec.end_of_turn)]
    try:
        model.save_pretrained(str(hf_dir))
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _hf_state_dict(weights: _Weights, names: Any) -> dict[str, Array]:
    """Map the weights onto the model's own parameter names.

    transformers 5 stores Mixtral experts fused: ``mlp.experts.gate_up_proj`` of shape
    ``(experts, 2*intermediate, hidden)`` with the gate (w1) rows first, and
    ``mlp.experts.down_proj`` of shape ``(experts, hidden, intermediate)``. transformers 4 used
    ``block_sparse_moe.experts.N.w1/w2/w3``. Both are handled so the builder follows the installed
    version; any other naming fails loudly.
    """
    keys = set(names)
    state: dict[str, Array] = {
        "model.embed_tokens.weight": weights.embed,
        "model.norm.weight": weights.norm,
        "lm_head.weight": weights.lm_head,
    }
    fused = "model.layers.0.mlp.experts.gate_up_proj" in keys
    moe = "mlp" if fused or "model.layers.0.mlp.gate.weight" in keys else "block_sparse_moe"
    for i, layer in enumerate(weights.layers):
        p = f"model.layers.{i}."
        state[p + "input_layernorm.weight"] = layer.attn_norm
        state[p + "post_attention_layernorm.weight"] = layer.ffn_norm
        state[p + "self_attn.q_proj.weight"] = layer.q
        state[p + "self_attn.k_proj.weight"] = layer.k
        state[p + "self_attn.v_proj.weight"] = layer.v
        state[p + "self_attn.o_proj.weight"] = layer.o
        state[p + f"{moe}.gate.weight"] = layer.router
        if fused:
            state[p + "mlp.experts.gate_up_proj"] = np.ascontiguousarray(
                np.concatenate([layer.gate, layer.up], axis=1)
            )
            state[p + "mlp.experts.down_proj"] = layer.down
        else:
            for x in range(layer.gate.shape[0]):
                q = p + f"{moe}.experts.{x}."
                state[q + "w1.weight"] = layer.gate[x]
                state[q + "w2.weight"] = layer.down[x]
                state[q + "w3.weight"] = layer.up[x]
    unknown = set(state) - keys
    if unknown:
        raise RuntimeError(
            "the installed transformers names Mixtral parameters differently:"
            f" {sorted(unknown)[:4]} not in the model (it has e.g. {sorted(keys)[:4]});"
            " update _hf_state_dict"
        )
    return state


# --- GGUF ----------------------------------------------------------------------------------------


def _permute_rope(weight: Array, n_head: int) -> Array:
    """Reorder Q/K rows from HF's rotate-half RoPE layout to llama.cpp's interleaved one.

    The same transform as ``LlamaModel.permute`` in llama.cpp's ``convert_hf_to_gguf.py``.
    """
    rows = weight.shape[0]
    return np.ascontiguousarray(
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _write_gguf(path: Path, spec: TinyModelSpec, weights: _Weights, vocab: _Vocab) -> None:
    """Write the weights and tokenizer as llama.cpp's converter writes a Mixtral checkpoint."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-chinese-mixtral")
    writer.add_vocab_size(len(vocab.pieces))
    writer.add_context_length(spec.context_length)
    writer.add_embedding_length(spec.hidden_size)
    writer.add_block_count(spec.num_layers)
    writer.add_feed_forward_length(spec.intermediate_size)
    writer.add_head_count(spec.num_heads)
    writer.add_head_count_kv(spec.num_kv_heads)
    writer.add_rope_dimension_count(spec.head_dim)
    writer.add_rope_freq_base(spec.rope_theta)
    writer.add_layer_norm_rms_eps(RMS_NORM_EPS)
    writer.add_expert_count(spec.num_experts)
    writer.add_expert_used_count(spec.experts_per_token)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab.pieces)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.token_types)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_unk_token_id(UNK_ID)
    writer.add_pad_token_id(UNK_ID)
    if spec.end_of_turn is not None:
        writer.add_eot_token_id(_special_id(spec, spec.end_of_turn))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(True)
    if spec.chat_template is not None:
        writer.add_chat_template(spec.chat_template)

    tensors: Mapping[str, Array] = _gguf_tensors(spec, weights)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    _flush(writer)


def _gguf_tensors(spec: TinyModelSpec, weights: _Weights) -> dict[str, Array]:
    """GGUF tensor names and numpy layouts (ggml reverses the shape) used by llama.cpp."""
    tensors: dict[str, Array] = {
        "token_embd.weight": weights.embed,
        "output_norm.weight": weights.norm,
        "output.weight": weights.lm_head,
    }
    for i, layer in enumerate(weights.layers):
        b = f"blk.{i}."
        tensors[b + "attn_norm.weight"] = layer.attn_norm
        tensors[b + "attn_q.weight"] = _permute_rope(layer.q, spec.num_heads)
        tensors[b + "attn_k.weight"] = _permute_rope(layer.k, spec.num_kv_heads)
        tensors[b + "attn_v.weight"] = layer.v
        tensors[b + "attn_output.weight"] = layer.o
        tensors[b + "ffn_norm.weight"] = layer.ffn_norm
        tensors[b + "ffn_gate_inp.weight"] = layer.router
        tensors[b + "ffn_gate_exps.weight"] = layer.gate
        tensors[b + "ffn_up_exps.weight"] = layer.up
        tensors[b + "ffn_down_exps.weight"] = layer.down
    return tensors


def _flush(writer: Any) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
