"""The read path: retrieval, packing into the window, prompts, citations, summaries, the chain.

It only reads the store (through :class:`~chinese_mixtral_rag.store.KnowledgeBase`'s read
methods) and knows nothing of which backend runs the model: it takes any LangChain chat model.
Imports ``store``, ``settings``, ``errors``, ``chinese`` and ``threads``; never the write path,
the backends, the model wing or the faces. ``build_qa_chain`` in :mod:`~.chain` is the entry.
"""
