"""Question answering over a knowledge base as one LCEL Runnable: retrieve, pack, answer, cite.

``build_qa_chain(chat, collection="laws")`` returns a Runnable. Its input is a dict::

    {"question": "...",                       # required
     "history": [("问题", "回答"), ...],        # optional earlier turns (or LangChain messages)
     "sources": ["民法典.pdf"],                # optional: only these files
     "where": {"file_type": "pdf"},           # optional Chroma metadata filter
     "mode": "qa"}                            # or "search", "summarize", "chat"

``stream`` yields dict chunks: first ``{"question", "search_query", "found", "report",
"index_stale"}`` (``index_stale``: the BM25 index is out of step with the store, answers use only
what both hold, the next ingest refreshes it), then
``{"answer": piece}`` per piece of text, then ``{"sources", "cited", "usage"}``; ``invoke``
returns them merged into one dict. ``sources[n - 1]`` is what the answer's ``[n]`` refers to;
markers that point to nothing, or to a passage that does not support the sentence they end
(:class:`~chinese_mixtral_rag.qa.citations.CitationFilter`), are removed from the answer as it
streams and are not in ``cited``.

When the best hit's relevance is below ``min_relevance`` the model is not asked at all: the
answer says the documents do not contain it, with no sources (no invented citations). Two
exceptions, where the model judges: files chosen with ``sources`` that fit the window whole are
read whole, and a question that relevance cannot judge (written in other words than the
documents, e.g. English over Chinese, see :meth:`HybridRetriever.judges`) gets the passages that
dense search found.

Other modes: ``search`` returns the retrieved passages as ``sources`` without any model (the
chain may be built with ``chat=None`` for it), hits that are neighbours in their file merged into
one passage, numbered in the rank of their best hit; ``summarize`` summarises the files named in
``sources`` whole, map-reduce when they exceed the window (``progress`` events tell the stage);
``chat`` talks to the model without documents.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import Runnable, RunnableGenerator
from langchain_core.runnables.utils import AddableDict

from chinese_mixtral_rag.errors import ChineseMixtralError
from chinese_mixtral_rag.qa import prompts
from chinese_mixtral_rag.qa.citations import CitationFilter, Source
from chinese_mixtral_rag.qa.packing import Packed, PackReport, hit_passages, pack
from chinese_mixtral_rag.qa.retrieval import HybridRetriever
from chinese_mixtral_rag.settings import QAOptions, Settings
from chinese_mixtral_rag.store import IndexState, KnowledgeBase, open_knowledge_base

#: Longest question the faces accept (a pasted book is an upload, not a question).
MAX_QUESTION_CHARS = 4000

#: Answer tokens reserved when the chat model sets no ``max_tokens``.
DEFAULT_ANSWER_TOKENS = 1024


def _history_pairs(history: Any) -> list[tuple[str, str]]:
    """Earlier turns as (question, answer) pairs, from pairs or from LangChain messages."""
    if not history:
        return []
    pairs: list[tuple[str, str]] = []
    if all(isinstance(m, BaseMessage) for m in history):
        question: str | None = None
        for message in history:
            if isinstance(message, HumanMessage):
                question = message.text
            elif question is not None:
                pairs.append((question, message.text))
                question = None
        return pairs
    for item in history:
        if isinstance(item, Mapping):
            pairs.append((str(item["question"]), str(item["answer"])))
        else:
            asked, answered = item
            pairs.append((str(asked), str(answered)))
    return pairs


class QAChain:
    """The steps of one answer; :func:`build_qa_chain` wraps it as a Runnable."""

    def __init__(
        self,
        chat: BaseChatModel | None,
        kb: KnowledgeBase,
        options: QAOptions,
        *,
        context_length: int | None = None,
    ) -> None:
        self.chat = chat
        self.kb = kb
        self.options = options
        self._context_length = context_length
        self.retriever = HybridRetriever(
            kb=kb,
            k=options.retrieve_k,
            fetch_k=options.fetch_k,
            dense_weight=options.dense_weight,
            reranker=options.reranker,
        )

    # -- the model's measures -------------------------------------------------------------------

    @property
    def model(self) -> BaseChatModel:
        if self.chat is None:
            raise ChineseMixtralError(
                "No model configured: only search works. Set CMR_MODEL_PATH to a "
                "Chinese-Mixtral GGUF file or HF checkpoint directory (or pass a chat model to "
                "build_qa_chain) to get answers."
            )
        return self.chat

    @property
    def context_length(self) -> int:
        if self._context_length is not None:
            return self._context_length
        backend = getattr(self.model, "get_backend", None)
        if backend is None:
            raise ChineseMixtralError(
                f"{type(self.chat).__name__} does not report its context window: pass "
                "context_length= to build_qa_chain."
            )
        return int(backend().context_length)

    @property
    def answer_tokens(self) -> int:
        return int(getattr(self.chat, "max_tokens", None) or DEFAULT_ANSWER_TOKENS)

    def prompt_tokens(self, messages: Sequence[BaseMessage]) -> int:
        """Exact tokens of the rendered prompt (our chat model) or the model's own count."""
        prompt_ids = getattr(self.chat, "prompt_ids", None)
        if prompt_ids is not None:
            return len(prompt_ids(messages))
        return int(self.model.get_num_tokens_from_messages(list(messages)))

    def count(self, text: str) -> int:
        return int(self.model.get_num_tokens(text))

    # -- steps ------------------------------------------------------------------------------

    def search_query(self, question: str, history: list[tuple[str, str]]) -> str:
        """The query for retrieval: the question, made standalone when there is history."""
        if not history or self.options.condense == "off":
            return question
        if self.options.condense == "concat":
            return f"{history[-1][0]}\n{question}"
        prompt = prompts.CONDENSE.format(
            history=prompts.history_text(history[-3:]), question=question
        )
        rewritten = self.model.invoke(prompt, max_tokens=128, temperature=0.0).text.strip()
        # The question itself stays in the query: a poor rewrite cannot lose its words.
        return f"{rewritten.splitlines()[0] if rewritten else ''}\n{question}".strip()

    def retrieve(
        self,
        query: str,
        sources: Sequence[str] | None,
        where: Mapping[str, Any] | None,
        index_state: IndexState | None = None,
    ) -> list[Document]:
        return self.retriever.invoke(
            query,
            sources=list(sources) if sources else None,
            where=dict(where) if where else None,
            index_state=index_state,
        )

    def unjudged(self, question: str, hits: Sequence[Document]) -> bool:
        """Dense search found these hits for a question lexical relevance cannot judge: the
        model reads them rather than a threshold refusing them."""
        used_dense = any("dense_rank" in h.metadata for h in hits)
        return used_dense and not self.retriever.judges(question)

    def candidate_documents(
        self, hits: Sequence[Document], sources: Sequence[str] | None, budget: int
    ) -> dict[str, list[Document]] | None:
        """Every chunk of the files that could go in whole: the chosen files, else the files
        of the hits that pass the relevance bar; None when they are clearly too big to fit."""
        if not self.options.whole_documents:
            return None
        if sources:
            names = list(dict.fromkeys(sources))
        else:
            bar = self.options.min_relevance
            names = list(
                dict.fromkeys(
                    str(h.metadata.get("source", ""))
                    for h in hits
                    if float(h.metadata.get("relevance", 0.0)) >= bar
                )
            )
        # Cheap size estimate from the hits before fetching whole files from the store.
        sizes = {
            str(h.metadata.get("source", "")): int(h.metadata.get("file_chunks", 0))
            * max(1, len(h.page_content) // 2)
            for h in hits
        }
        if sum(sizes.get(name, 0) for name in names) > 2 * budget:
            return None
        documents = {name: self.kb.chunks_of(name) for name in names}
        return {name: chunks for name, chunks in documents.items() if chunks}

    def plan(
        self,
        question: str,
        history: list[tuple[str, str]],
        hits: Sequence[Document],
        sources: Sequence[str] | None,
    ) -> tuple[Packed, list[tuple[str, str]]]:
        """Pack the material, dropping the oldest turns while the history takes more than half
        of what the window leaves for the prompt."""
        limit = self.context_length - self.answer_tokens
        if limit <= 0:
            raise ChineseMixtralError(
                f"max_tokens={self.answer_tokens} leaves no room for a prompt in the "
                f"{self.context_length}-token window; lower max_tokens."
            )

        def measure_with(turns: list[tuple[str, str]]) -> Any:
            return lambda passages: self.prompt_tokens(
                prompts.qa_messages(passages, question, turns)
            )

        while history and measure_with(history)([]) > limit // 2:
            history = history[1:]
        measure = measure_with(history)
        base = measure([])  # the prompt without material, rendered and counted once
        if self.options.context_tokens is not None:
            limit = min(limit, base + self.options.context_tokens)
        documents = self.candidate_documents(hits, sources, limit - base)
        packed = pack(hits, limit=limit, measure=measure, count=self.count, documents=documents)
        return packed, history

    def run(self, inputs: Mapping[str, Any]) -> Iterator[AddableDict]:
        """The answer as a stream of dict chunks (see the module docstring)."""
        mode = str(inputs.get("mode") or "qa")
        sources = inputs.get("sources") or None
        if mode == "summarize":
            yield from self.summarize(sources)
            return
        question = str(inputs.get("question") or "").strip()
        if not question:
            raise ChineseMixtralError('Give a question: {"question": "..."}.')
        history = _history_pairs(inputs.get("history"))
        where = inputs.get("where") or None
        if mode == "search":
            state = self.kb.index_state()  # read once: the retriever gets it too
            hits = self.retrieve(question, sources, where, state)
            listed = [Source.of(n, p) for n, p in enumerate(hit_passages(hits), start=1)]
            yield AddableDict(
                question=question,
                search_query=question,
                found=bool(hits),
                index_stale=state.stale,
            )
            yield AddableDict(sources=listed, cited=[], usage=None)
            return
        if mode == "chat":
            yield AddableDict(question=question, found=False)
            messages = prompts.chat_messages(question, history)
            yield from self._answer(messages, [])
            return
        if mode != "qa":
            raise ChineseMixtralError(
                f"Unknown mode {mode!r}: use 'qa', 'search', 'summarize' or 'chat'."
            )
        state = self.kb.index_state()  # read once: the retriever gets it too
        stale = state.stale
        query = self.search_query(question, history)
        hits = self.retrieve(query, sources, where, state)
        best = max((float(h.metadata.get("relevance", 0.0)) for h in hits), default=0.0)
        if query != question and hits:
            # A rewrite adds the words a follow-up leaves out, but a poor one must not hide
            # what the question itself matches.
            best = max(best, *self.retriever.relevances(question, hits))
        packed = None
        found = bool(hits) and (best >= self.options.min_relevance or self.unjudged(question, hits))
        if not found and sources:
            # Files the user chose that fit whole are read whole: the model, not the search
            # score, judges whether they answer the question.
            packed, history = self.plan(question, history, hits, sources)
            found = packed.report.mode == "whole"
        if not found:
            report = PackReport(mode="empty", limit=self.context_length - self.answer_tokens)
            yield AddableDict(
                question=question,
                search_query=query,
                found=False,
                report=report,
                index_stale=stale,
            )
            yield AddableDict(answer=prompts.NOT_FOUND[prompts.language_of(question)])
            yield AddableDict(sources=[], cited=[], usage=None)
            return
        if packed is None:
            packed, history = self.plan(question, history, hits, sources)
        yield AddableDict(
            question=question,
            search_query=query,
            found=True,
            report=packed.report,
            index_stale=stale,
        )
        messages = prompts.qa_messages(packed.passages, question, history)
        listed = [Source.of(n, p) for n, p in enumerate(packed.passages, start=1)]
        yield from self._answer(messages, [p.text for p in packed.passages])
        yield AddableDict(sources=listed)

    def _answer(self, messages: list[BaseMessage], passages: list[str]) -> Iterator[AddableDict]:
        """Stream the model's answer, keeping only the markers ``passages`` support."""
        citations = CitationFilter(passages)
        usage = None
        for chunk in self.model.stream(messages):
            if chunk.usage_metadata:
                usage = dict(chunk.usage_metadata)
            piece = citations.feed(chunk.text)
            if piece:
                yield AddableDict(answer=piece)
        tail = citations.flush()
        if tail:
            yield AddableDict(answer=tail)
        yield AddableDict(cited=citations.cited, usage=usage)

    def summarize(self, sources: Sequence[str] | None) -> Iterator[AddableDict]:
        """A summary of whole files (map-reduce when they exceed the window)."""
        from chinese_mixtral_rag.qa.summarize import summarize

        if not sources:
            raise ChineseMixtralError(
                'Choose the files to summarise: {"mode": "summarize", "sources": ["a.pdf"]}.'
            )
        documents = {name: self.kb.chunks_of(name) for name in dict.fromkeys(sources)}
        unknown = [name for name, chunks in documents.items() if not chunks]
        if unknown:
            known = sorted(self.kb.file_states())
            listed = ", ".join(known[:10]) + (" ..." if len(known) > 10 else "")
            raise ChineseMixtralError(
                f"Not in knowledge base {self.kb.display_name!r}: {', '.join(unknown)}. "
                f"It holds {len(known)} files: {listed or '(none)'}."
            )
        yield AddableDict(question="", found=True, files=list(documents))
        yield from summarize(
            self.model,
            documents,
            limit=self.context_length - self.answer_tokens,
            measure=self.prompt_tokens,
            count=self.count,
        )
        yield AddableDict(sources=[], cited=[])


def build_qa_chain(
    chat: BaseChatModel | None,
    *,
    collection: str | None = None,
    kb: KnowledgeBase | None = None,
    settings: Settings | None = None,
    context_length: int | None = None,
    **options: Any,
) -> Runnable[dict[str, Any], dict[str, Any]]:
    """Question answering over a knowledge base with ``chat`` as an LCEL Runnable.

    ``collection`` (or a ready ``kb``) picks the knowledge base; ``settings`` (default: from
    ``CMR_*`` variables) says where stores live; keyword ``options`` override
    :class:`~chinese_mixtral_rag.settings.QAOptions` fields (``retrieve_k``, ``min_relevance``,
    ``context_tokens``, ``reranker``, ...). ``context_length`` is only needed for chat models
    other than :class:`~chinese_mixtral_rag.ChineseMixtralChat`.

    .. code-block:: python

        qa = build_qa_chain(chat, collection="laws")
        for event in qa.stream({"question": "民法典中关于居住权的规定有哪些？"}):
            print(event.get("answer", ""), end="")
        result = qa.invoke({"question": "...", "sources": ["民法典.pdf"]})
        result["answer"], result["sources"][0].source, result["sources"][0].page
    """
    settings = settings or Settings()
    merged = QAOptions(**{**settings.model_dump(include=set(QAOptions.model_fields)), **options})
    knowledge = kb or open_knowledge_base(settings, collection)
    chain = QAChain(chat, knowledge, merged, context_length=context_length)

    def transform(inputs: Iterator[dict[str, Any]]) -> Iterator[AddableDict]:
        for item in inputs:
            yield from chain.run(item)

    async def atransform(inputs: AsyncIterator[dict[str, Any]]) -> AsyncIterator[AddableDict]:
        from chinese_mixtral_rag.threads import iterate_in_thread

        async for item in inputs:
            async for chunk in iterate_in_thread(partial(chain.run, item)):
                yield chunk

    runnable: Runnable[dict[str, Any], dict[str, Any]] = RunnableGenerator(
        transform, atransform, name="chinese_mixtral_qa"
    )
    return runnable
