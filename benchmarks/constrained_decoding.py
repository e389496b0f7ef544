"""Grammar-constrained decoding (JSON Schema) on both backends: which library, at what cost.

What it measures (issue 16): for the tiny random-weight Mixtral (``TINY`` from
:mod:`chinese_mixtral_rag.testing`, built into a temporary directory at start; HF and GGUF hold the
same weights and tokenizer), greedy decoding of up to ``--tokens`` new tokens after a Chinese chat
prompt, constrained to a JSON Schema by

transformers (a KV-cache decode loop like ``TransformersBackend.generate_ids``, the constraint
applied to the step's logits as our logits processors are)
    xgrammar, llguidance, outlines-core and lm-format-enforcer;
llama.cpp (``Llama.generate``)
    llama.cpp's own grammar (``grammar=LlamaGrammar.from_json_schema``) and xgrammar / llguidance
    as a numpy ``logits_processor``.

Per cell: setup (tokenizer tables, once per process), compile time of the schema (first, and
again: the cached one where the library caches), ms per decoded token with the constraint and
without it (the same loop, the same prompt, runs interleaved in the same process; the prompt's
prefill is not counted: time from the first token to the last, over the tokens after the first),
and over ``--runs`` runs: how many outputs parse as JSON and validate against the schema
(``jsonschema``), decode as strict UTF-8, and ended with EOS by themselves. The runs differ only by
the prompt (a run number in it), so the random model takes different paths.

Then a feature probe per library: for each JSON Schema keyword, one string the schema allows and
one it does not, fed to the matcher byte by byte (single-character tokens, byte-fallback tokens for
the rest); "enforced" if it takes the first and refuses the second, "ignored" if it takes both,
"refused" if the schema does not compile.

Every cell runs in a fresh subprocess (``--case``), so a library or llama.cpp that aborts the
process shows as a crashed row instead of ending the benchmark. Nothing passes or fails.

llguidance comes with the package (the llama-cpp and transformers extras); the others are compared
when installed by hand, which the project does not do (xgrammar pulls triton, ~1 GB):
``.venv/bin/pip install xgrammar==0.2.8 outlines-core==0.2.14 lm-format-enforcer==0.11.3``.
A library that is missing is listed as not installed.

Run: ``.venv/bin/python benchmarks/constrained_decoding.py [--runs 3] [--tokens 192]
[--libraries xgrammar,llguidance,outlines-core,lm-format-enforcer,llama.cpp] [--threads N]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from chinese_mixtral_rag.testing.tables import format_table
from chinese_mixtral_rag.testing.tiny_model import TINY, build_tiny_mixtral

N_CTX = 1024

SCHEMAS: dict[str, dict[str, Any]] = {
    # The LangChain standard tests' Joke, strings bounded so that the object can close.
    "joke": {
        "type": "object",
        "properties": {
            "setup": {"type": "string", "maxLength": 24},
            "punchline": {"type": "string", "maxLength": 24},
            "rating": {"type": "integer", "minimum": 1, "maximum": 10},
        },
        "required": ["setup", "punchline"],
        "additionalProperties": False,
    },
    # What a tool call comes back as.
    "tool": {
        "type": "object",
        "properties": {
            "name": {"const": "magic_function"},
            "arguments": {
                "type": "object",
                "properties": {"input": {"type": "integer"}},
                "required": ["input"],
                "additionalProperties": False,
            },
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 16},
            "tags": {
                "type": "array",
                "items": {"enum": ["笑话", "故事", "新闻"]},
                "minItems": 1,
                "maxItems": 3,
            },
            "score": {"type": "number"},
            "done": {"type": "boolean"},
            "item": {
                "type": "object",
                "properties": {"id": {"type": "integer"}, "kind": {"enum": ["a", "b"]}},
                "required": ["id", "kind"],
                "additionalProperties": False,
            },
        },
        "required": ["title", "tags", "score", "done", "item"],
        "additionalProperties": False,
    },
    "json-mode": {"type": "object"},
}

#: keyword -> (schema, a string it allows, a string it does not)
PROBES: dict[str, tuple[dict[str, Any], str, str]] = {
    "maxLength": ({"type": "string", "maxLength": 3}, '"abc"', '"abcd"'),
    "minLength": ({"type": "string", "minLength": 3}, '"abc"', '"ab"'),
    "pattern": ({"type": "string", "pattern": "^[0-9]{3}$"}, '"123"', '"12a"'),
    "enum": ({"enum": ["笑话", "故事"]}, '"故事"', '"新闻"'),
    "const": ({"const": "magic_function"}, '"magic_function"', '"magic"'),
    "anyOf": ({"anyOf": [{"type": "integer"}, {"type": "boolean"}]}, "true", '"x"'),
    "$ref/$defs": (
        {
            "$defs": {"n": {"type": "integer"}},
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/n"}},
            "required": ["a"],
        },
        '{"a":1}',
        '{"a":"x"}',
    ),
    "additionalProperties:false": (
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "required": ["a"],
            "additionalProperties": False,
        },
        '{"a":1}',
        '{"a":1,"b":2}',
    ),
    "optional/required": (
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["b"],
            "additionalProperties": False,
        },
        '{"b":1}',
        '{"a":1}',
    ),
    "minimum/maximum": ({"type": "integer", "minimum": 1, "maximum": 10}, "7", "11"),
    "maxItems": (
        {"type": "array", "items": {"type": "integer"}, "maxItems": 2},
        "[1,2]",
        "[1,2,3]",
    ),
}

TRANSFORMERS_LIBRARIES = ("xgrammar", "llguidance", "outlines-core", "lm-format-enforcer")
LLAMA_LIBRARIES = ("llama.cpp", "xgrammar", "llguidance")


def untyped(module: str) -> Any:
    """Import a module that has no type information (it is an optional, benchmark-only one)."""
    return importlib.import_module(module)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the constraints


class Matcher(Protocol):
    """One generation's constraint state."""

    def mask(self, scores: Any) -> None:
        """Set the logits of every token the grammar does not allow now to -inf, in place
        (``scores``: a 1 x vocab float32 torch tensor)."""

    def accept(self, token: int) -> bool:
        """Advance by the token chosen; False if the grammar refuses it."""

    def reset(self) -> None: ...


class Library(Protocol):
    name: str
    #: Whether compiling the same schema again is served from a cache.
    caches: bool

    def compile(self, schema: dict[str, Any]) -> Any: ...

    def matcher(self, compiled: Any) -> Matcher: ...


class Vocab:
    """What every library needs to know about the tokenizer."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        from chinese_mixtral_rag.backends.transformers import _piece_table

        self.tokenizer = tokenizer
        self.size = vocab_size
        self.eos = int(tokenizer.eos_token_id)
        self.pieces = _piece_table(tokenizer)[:vocab_size]
        self.pieces += [b""] * (vocab_size - len(self.pieces))
        byte_ids = {}
        for token_id, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(vocab_size)))):
            if piece and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
                byte_ids[int(piece[3:5], 16)] = token_id
        self.byte_ids = byte_ids
        whole: dict[bytes, int] = {}
        for token_id, piece_bytes in enumerate(self.pieces):
            if piece_bytes and token_id not in byte_ids.values():
                whole.setdefault(piece_bytes, token_id)
        self.whole = whole

    def spell(self, text: str) -> list[int]:
        """Tokens of ``text`` one character at a time (a byte-fallback token per byte where the
        character is not a piece): a valid, if not canonical, tokenization."""
        ids: list[int] = []
        for char in text:
            data = char.encode("utf-8")
            if data in self.whole:
                ids.append(self.whole[data])
            else:
                ids.extend(self.byte_ids[b] for b in data)
        return ids


class XGrammar:
    name = "xgrammar"
    caches = True

    def __init__(self, vocab: Vocab) -> None:
        import xgrammar as xgr

        self.xgr = xgr
        info = xgr.TokenizerInfo.from_huggingface(vocab.tokenizer, vocab_size=vocab.size)
        self.compiler = xgr.GrammarCompiler(info, max_threads=2)
        self.size = vocab.size

    def compile(self, schema: dict[str, Any]) -> Any:
        # Compact separators and no free whitespace: with any_whitespace=True a model (certainly
        # a random one) can emit whitespace forever inside a valid object.
        return self.compiler.compile_json_schema(
            json.dumps(schema), any_whitespace=False, separators=(",", ":"), strict_mode=True
        )

    def matcher(self, compiled: Any) -> Matcher:
        return _XGrammarMatcher(self.xgr, compiled, self.size)


class _XGrammarMatcher:
    def __init__(self, xgr: Any, compiled: Any, size: int) -> None:
        self.xgr = xgr
        self.matcher = xgr.GrammarMatcher(compiled)
        self.bitmask = xgr.allocate_token_bitmask(1, size)

    def mask(self, scores: Any) -> None:
        if self.matcher.fill_next_token_bitmask(self.bitmask):
            self.xgr.apply_token_bitmask_inplace(scores, self.bitmask)

    def accept(self, token: int) -> bool:
        return bool(self.matcher.accept_token(token))

    def reset(self) -> None:
        self.matcher.reset()


class LLGuidance:
    name = "llguidance"
    caches = False

    def __init__(self, vocab: Vocab) -> None:
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.llg = llguidance
        self.tokenizer = llguidance.hf.from_tokenizer(vocab.tokenizer, n_vocab=vocab.size)
        self.size = vocab.size

    def compile(self, schema: dict[str, Any]) -> Any:
        grammar = self.llg.LLMatcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": False}
        )
        # The matcher is where llguidance builds its parser; its is_error() says whether the
        # schema was refused (it never raises for grammar errors).
        matcher = self.llg.LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return grammar

    def matcher(self, compiled: Any) -> Matcher:
        return _LLGuidanceMatcher(self.llg, self.tokenizer, compiled, self.size)


class _LLGuidanceMatcher:
    def __init__(self, llg: Any, tokenizer: Any, grammar: str, size: int) -> None:
        self.torch = llg.torch
        self.matcher = llg.LLMatcher(tokenizer, grammar, log_level=0)
        self.bitmask = llg.torch.allocate_token_bitmask(1, size)

    def mask(self, scores: Any) -> None:
        self.torch.fill_next_token_bitmask(self.matcher, self.bitmask, 0)
        self.torch.apply_token_bitmask_inplace(scores, self.bitmask)

    def accept(self, token: int) -> bool:
        return bool(self.matcher.consume_token(token)) and not self.matcher.is_error()

    def reset(self) -> None:
        self.matcher.reset()


class OutlinesCore:
    name = "outlines-core"
    caches = False

    def __init__(self, vocab: Vocab) -> None:
        outlines_core = untyped("outlines_core")

        self.oc = outlines_core
        pieces: dict[bytes, list[int]] = {}
        for token_id, piece in enumerate(vocab.pieces):
            if piece and token_id != vocab.eos:
                pieces.setdefault(piece, []).append(token_id)
        self.vocabulary = outlines_core.Vocabulary(vocab.eos, pieces)
        self.size = vocab.size

    def compile(self, schema: dict[str, Any]) -> Any:
        build_regex_from_schema = untyped("outlines_core.json_schema").build_regex_from_schema

        # No whitespace between tokens of the JSON (the default allows one optional space).
        regex = build_regex_from_schema(json.dumps(schema), "")
        return self.oc.Index(regex, self.vocabulary)

    def matcher(self, compiled: Any) -> Matcher:
        return _OutlinesMatcher(self.oc, compiled, self.size)


class _OutlinesMatcher:
    def __init__(self, oc: Any, index: Any, size: int) -> None:
        kernels = untyped("outlines_core.kernels.torch")

        self.kernels = kernels
        self.guide = oc.Guide(index)
        self.bitmask = kernels.allocate_token_bitmask(size)

    def mask(self, scores: Any) -> None:
        self.kernels.fill_next_token_bitmask(self.guide, self.bitmask)
        self.kernels.apply_token_bitmask_inplace(scores, self.bitmask)

    def accept(self, token: int) -> bool:
        try:
            self.guide.advance(token, return_tokens=False)
        except ValueError:
            return False
        return True

    def reset(self) -> None:
        self.guide.reset()


class LMFormatEnforcer:
    name = "lm-format-enforcer"
    caches = False

    def __init__(self, vocab: Vocab) -> None:
        import transformers.tokenization_utils_base as base

        # lm-format-enforcer 0.11.3 imports PreTrainedTokenizerBase from
        # transformers.tokenization_utils, which transformers 5 no longer has.
        try:
            from transformers.tokenization_utils import PreTrainedTokenizerBase  # noqa: F401
        except ImportError:
            import types

            shim = types.ModuleType("transformers.tokenization_utils")
            shim.PreTrainedTokenizerBase = base.PreTrainedTokenizerBase  # type: ignore[attr-defined]
            sys.modules["transformers.tokenization_utils"] = shim
        integration = untyped("lmformatenforcer.integrations.transformers")

        self.data = integration.build_token_enforcer_tokenizer_data(
            vocab.tokenizer, vocab_size=vocab.size
        )
        self.size = vocab.size

    def compile(self, schema: dict[str, Any]) -> Any:
        untyped("lmformatenforcer").JsonSchemaParser(schema)  # raises on what it cannot parse
        return schema

    def matcher(self, compiled: Any) -> Matcher:
        return _LMFEMatcher(self.data, compiled)


class _LMFEMatcher:
    def __init__(self, data: Any, schema: dict[str, Any]) -> None:
        self.data = data
        self.schema = schema
        self.reset()

    def reset(self) -> None:
        lmfe = untyped("lmformatenforcer")
        self.enforcer = lmfe.TokenEnforcer(self.data, lmfe.JsonSchemaParser(self.schema))
        self.tokens: list[int] = []

    def mask(self, scores: Any) -> None:
        allowed = self.enforcer.get_allowed_tokens(self.tokens).allowed_tokens
        keep = scores[0, allowed].clone()
        scores.fill_(-float("inf"))
        scores[0, allowed] = keep

    def accept(self, token: int) -> bool:
        allowed = self.enforcer.get_allowed_tokens(self.tokens).allowed_tokens
        self.tokens.append(token)
        return token in allowed


LIBRARIES: dict[str, Callable[[Vocab], Library]] = {
    "xgrammar": XGrammar,
    "llguidance": LLGuidance,
    "outlines-core": OutlinesCore,
    "lm-format-enforcer": LMFormatEnforcer,
}


# --------------------------------------------------------------------------- one cell


@dataclass
class Generation:
    ids: list[int]
    ended_by_eos: bool
    seconds_per_token: float
    """From the first token to the last, over the tokens after the first (no prefill)."""


@dataclass
class CaseResult:
    backend: str
    library: str
    schema: str
    setup_ms: float = 0.0
    compile_ms: float = 0.0
    compile_again_ms: float = 0.0
    constrained_ms: float = 0.0
    free_ms: float = 0.0
    tokens: float = 0.0
    valid: int = 0
    utf8: int = 0
    eos: int = 0
    runs: int = 0
    error: str = ""
    sample: str = ""
    problems: list[str] = field(default_factory=list)


def prompt_text(run: int) -> str:
    return f"[INST] 请用 JSON 回答，讲第{run + 1}个关于混合专家模型的笑话。 [/INST]"


def timed(
    tokens: Iterator[int], eos: int, budget: int, on_token: Callable[[int], bool]
) -> Generation:
    ids: list[int] = []
    stamps: list[float] = []
    ended = False
    for token in tokens:
        stamps.append(time.perf_counter())
        ids.append(token)
        if token == eos:
            ended = True
            break
        if not on_token(token) or len(ids) >= budget:
            break
    per_token = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else 0.0
    return Generation(ids, ended, per_token)


class TransformersRunner:
    """The decode loop of ``TransformersBackend.generate_ids`` (greedy), with the constraint
    where our logits processors run."""

    def __init__(self, hf_dir: Path, threads: int) -> None:
        import torch
        import transformers

        torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype="float32")
        self.model.eval()  # type: ignore[no-untyped-call]
        self.vocab_size = int(self.model.config.vocab_size)

    def prompt(self, run: int) -> list[int]:
        ids = self.tokenizer(prompt_text(run), add_special_tokens=False).input_ids
        return [int(self.tokenizer.bos_token_id), *ids]

    def tokens(self, prompt: Sequence[int], matcher: Matcher | None) -> Iterator[int]:
        torch = self.torch
        step_input = torch.tensor([list(prompt)], dtype=torch.long)
        cache: Any = None
        while True:
            with torch.inference_mode():
                output = self.model(
                    input_ids=step_input, past_key_values=cache, use_cache=True, logits_to_keep=1
                )
                cache = output.past_key_values
                scores = output.logits[:, -1, :].float()
                if matcher is not None:
                    matcher.mask(scores)
                token = scores.argmax(dim=-1, keepdim=True)
            step_input = token
            yield int(token)


class LlamaRunner:
    def __init__(self, gguf: Path, hf_dir: Path, threads: int) -> None:
        import transformers
        from llama_cpp import Llama

        self.llama = Llama(
            model_path=str(gguf), n_ctx=N_CTX, n_batch=512, n_threads=threads, verbose=False
        )
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
        self.vocab_size = int(self.llama.n_vocab())

    def prompt(self, run: int) -> list[int]:
        return list(self.llama.tokenize(prompt_text(run).encode("utf-8"), add_bos=True))

    def tokens(
        self, prompt: Sequence[int], matcher: Matcher | None, grammar: Any = None
    ) -> Iterator[int]:
        import torch
        from llama_cpp import LogitsProcessorList

        processors = None
        if matcher is not None:

            def constrain(_: Any, scores: Any) -> Any:
                # llama-cpp-python hands over a strided view of its llama_token_data array
                # (12-byte records): xgrammar's CPU kernel assumes contiguous logits and masks
                # every third entry of a view, so mask a contiguous copy and write it back.
                contiguous = torch.from_numpy(np.ascontiguousarray(scores)).unsqueeze(0)
                matcher.mask(contiguous)
                scores[:] = contiguous[0].numpy()
                return scores

            processors = LogitsProcessorList([constrain])
        self.llama.reset()  # type: ignore[no-untyped-call]
        generator = self.llama.generate(
            list(prompt),
            top_k=1,
            top_p=1.0,
            min_p=0.0,
            temp=0.0,
            repeat_penalty=1.0,
            logits_processor=processors,
            grammar=grammar,
        )
        try:
            yield from generator
        finally:
            generator.close()


def check_output(ids: list[int], vocab: Vocab, schema: dict[str, Any]) -> tuple[bool, bool, str]:
    """(valid against the schema, strict UTF-8, the text)."""
    jsonschema = untyped("jsonschema")

    data = b"".join(vocab.pieces[t] for t in ids if t != vocab.eos)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False, False, data.decode("utf-8", errors="replace")
    try:
        jsonschema.validate(json.loads(text), schema)
    except ValueError as exc:
        lenient = "; parses with strict=False" if _parses_leniently(text) else ""
        return False, True, f"[not JSON: {exc}{lenient}] {text}"
    except jsonschema.ValidationError as exc:
        return False, True, f"[schema: {exc.message[:80]}] {text}"
    return True, True, text


def _parses_leniently(text: str) -> bool:
    """Whether the only fault is raw control characters in strings."""
    try:
        json.loads(text, strict=False)
    except ValueError:
        return False
    return True


def run_case(args: argparse.Namespace) -> CaseResult:
    backend, library, schema_name = args.case
    schema = SCHEMAS[schema_name]
    result = CaseResult(backend, library, schema_name, runs=args.runs)
    runner: TransformersRunner | LlamaRunner
    if backend == "transformers":
        runner = TransformersRunner(args.hf, args.threads)
    else:
        runner = LlamaRunner(args.gguf, args.hf, args.threads)
    vocab = Vocab(runner.tokenizer, runner.vocab_size)
    lib: Library | None = None
    start = time.perf_counter()
    if library != "llama.cpp":
        lib = LIBRARIES[library](vocab)
    result.setup_ms = 1000 * (time.perf_counter() - start)

    def compile_once() -> Any:
        begin = time.perf_counter()
        if lib is None:
            from llama_cpp.llama_grammar import LlamaGrammar

            compiled = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        else:
            compiled = lib.compile(schema)
        return compiled, 1000 * (time.perf_counter() - begin)

    try:
        compiled, result.compile_ms = compile_once()
        compiled, result.compile_again_ms = compile_once()
    except Exception as exc:
        result.error = f"refused: {type(exc).__name__}: {str(exc)[:120]}"
        return result

    def generate(run: int, constrained: bool) -> Generation:
        prompt = runner.prompt(run)
        if not constrained:
            return timed(runner.tokens(prompt, None), vocab.eos, args.tokens, lambda _: True)
        if lib is None:
            assert isinstance(runner, LlamaRunner)
            return timed(
                runner.tokens(prompt, None, grammar=compiled),
                vocab.eos,
                args.tokens,
                lambda _: True,
            )
        matcher = lib.matcher(compiled)
        if isinstance(runner, LlamaRunner):
            tokens = runner.tokens(prompt, matcher)
        else:
            tokens = runner.tokens(prompt, matcher)
        return timed(tokens, vocab.eos, args.tokens, matcher.accept)

    generate(0, False)  # warm-up
    generate(0, True)
    free: list[float] = []
    constrained: list[float] = []
    lengths: list[int] = []
    for run in range(args.runs):
        free.append(generate(run, False).seconds_per_token)
        out = generate(run, True)
        constrained.append(out.seconds_per_token)
        lengths.append(len(out.ids))
        valid, utf8, text = check_output(out.ids, vocab, schema)
        result.valid += valid
        result.utf8 += utf8
        result.eos += out.ended_by_eos
        if run == 0:
            result.sample = text
        if not valid and len(result.problems) < 2:
            result.problems.append(text[:200])
    result.free_ms = 1000 * statistics.median(free)
    result.constrained_ms = 1000 * statistics.median(constrained)
    result.tokens = statistics.median(lengths)
    return result


# --------------------------------------------------------------------------- feature probes


def run_probe(args: argparse.Namespace) -> dict[str, str]:
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(args.hf)
    config = transformers.AutoConfig.from_pretrained(args.hf)
    vocab = Vocab(tokenizer, int(config.vocab_size))
    lib = LIBRARIES[args.probe](vocab)
    outcome: dict[str, str] = {}
    for keyword, (schema, good, bad) in PROBES.items():
        try:
            compiled = lib.compile(schema)
        except Exception as exc:
            outcome[keyword] = f"refused ({type(exc).__name__})"
            continue

        def takes(text: str, compiled: Any = compiled) -> bool:
            matcher = lib.matcher(compiled)
            return all(matcher.accept(t) for t in [*vocab.spell(text), vocab.eos])

        takes_good, takes_bad = takes(good), takes(bad)
        outcome[keyword] = (
            "enforced"
            if takes_good and not takes_bad
            else "ignored"
            if takes_good
            else "REJECTS VALID"
        )
    return outcome


# --------------------------------------------------------------------------- the table


def spawn(argv: list[str], timeout: float) -> tuple[dict[str, Any] | None, str]:
    try:
        done = subprocess.run(
            [sys.executable, __file__, *argv], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-1:] or [""]
        return None, f"crashed (exit {done.returncode}): {tail[0][:100]}"
    return json.loads(lines[-1]), ""


def ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def print_table(results: Sequence[CaseResult]) -> None:
    headers = [
        "backend",
        "library",
        "schema",
        "setup ms",
        "compile ms",
        "again ms",
        "ms/tok con",
        "ms/tok free",
        "tok/s ratio",
        "tokens",
        "valid/N",
        "utf8/N",
        "EOS/N",
    ]
    cells: list[list[str]] = []
    notes: list[str] = []
    for r in results:
        if r.error:
            cells.append([r.backend, r.library, r.schema, ms(r.setup_ms), r.error, *[""] * 8])
            continue
        ratio = r.free_ms / r.constrained_ms if r.constrained_ms else 0.0
        cells.append(
            [
                r.backend,
                r.library,
                r.schema,
                ms(r.setup_ms),
                ms(r.compile_ms),
                ms(r.compile_again_ms),
                ms(r.constrained_ms),
                ms(r.free_ms),
                f"{ratio:.2f}",
                f"{r.tokens:.0f}",
                f"{r.valid}/{r.runs}",
                f"{r.utf8}/{r.runs}",
                f"{r.eos}/{r.runs}",
            ]
        )
        notes.append(f"{r.backend}/{r.library}/{r.schema}: {r.sample[:90]!r}")
        notes.extend(f"    invalid: ...{p!r}" for p in r.problems)
    print(format_table(headers, cells, right=set(range(3, 13))))
    print()
    print("First output of each cell:")
    for note in notes:
        print(f"  {note}")


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for name in (
        "torch",
        "transformers",
        "llama-cpp-python",
        "xgrammar",
        "llguidance",
        "outlines-core",
        "lm-format-enforcer",
    ):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return ", ".join(parts)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="constrained runs per cell")
    parser.add_argument("--tokens", type=int, default=192, help="token budget per run")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument(
        "--libraries",
        default="xgrammar,llguidance,outlines-core,lm-format-enforcer,llama.cpp",
        help="comma-separated; llama.cpp is llama.cpp's own grammar",
    )
    parser.add_argument("--backends", default="transformers,llama.cpp")
    parser.add_argument("--schemas", default=",".join(SCHEMAS))
    parser.add_argument("--timeout", type=float, default=600, help="seconds per cell")
    parser.add_argument("--case", nargs=3, metavar=("BACKEND", "LIBRARY", "SCHEMA"))
    parser.add_argument("--probe", metavar="LIBRARY")
    parser.add_argument("--hf", type=Path)
    parser.add_argument("--gguf", type=Path)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.case:
        print(json.dumps(asdict(run_case(args)), ensure_ascii=False))
        return
    if args.probe:
        print(json.dumps(run_probe(args), ensure_ascii=False))
        return
    libraries = args.libraries.split(",")
    schemas = args.schemas.split(",")
    results: list[CaseResult] = []
    probes: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="cmrag-bench-") as tmp:
        log("building the tiny model")
        model = build_tiny_mixtral(Path(tmp) / "tiny", TINY)
        paths = ["--hf", str(model.hf_dir), "--gguf", str(model.gguf_path)]
        common = [*paths, "--runs", str(args.runs), "--tokens", str(args.tokens)]
        common += ["--threads", str(args.threads)]
        for backend in args.backends.split(","):
            allowed = TRANSFORMERS_LIBRARIES if backend == "transformers" else LLAMA_LIBRARIES
            for library in (lib for lib in libraries if lib in allowed):
                for schema in schemas:
                    log(f"{backend} / {library} / {schema}")
                    found, error = spawn(
                        ["--case", backend, library, schema, *common], args.timeout
                    )
                    results.append(
                        CaseResult(**found)
                        if found
                        else CaseResult(backend, library, schema, runs=args.runs, error=error)
                    )
        for library in (lib for lib in libraries if lib in LIBRARIES):
            log(f"probing {library}")
            found, error = spawn(["--probe", library, *paths], args.timeout)
            probes[library] = found or {k: error for k in PROBES}
    print(
        f"Greedy decoding of up to {args.tokens} tokens on the tiny Mixtral "
        f"(vocabulary {TINY.vocab_size}); {args.runs} runs per cell after 1 warm-up, medians; "
        f"{args.threads} threads; {os.cpu_count()} cores"
    )
    print(versions())
    print()
    print_table(results)
    if probes:
        print()
        print("Schema keywords (enforced / ignored / refused):")
        names = list(probes)
        rows = [[keyword, *(probes[n].get(keyword, "") for n in names)] for keyword in PROBES]
        print(format_table(["keyword", *names], rows, right=set()))


if __name__ == "__main__":
    main()
