"""The write path: files -> cleaned text -> token-counted chunks -> the store.

Loaders by format family (with encoding detection and Chinese-aware cleaning), the splitter, the
token counters and the ingest pipeline that hands whole files to the store. It writes only
through :class:`~chinese_mixtral_rag.store.KnowledgeBase`; it imports ``store``, ``errors``,
``chinese``, ``settings`` and the model-file readers of ``backends``, never the read path, the
model wing or the faces. No heavy import at package import time.
"""
