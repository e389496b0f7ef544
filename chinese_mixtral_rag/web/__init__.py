"""The web app, a face: ``cmrag web`` (Gradio) over the same QA chain as the API and the CLI.

``app.py`` is the server side (no Gradio: testable without a browser), ``ui.py`` the page,
``text.py`` what it says in Chinese and English. A face may import every wing; nothing but the
command line imports it.
"""

from chinese_mixtral_rag.qa.chain import MAX_QUESTION_CHARS
from chinese_mixtral_rag.web.app import Conversation, WebApp
from chinese_mixtral_rag.web.ui import build_app, launch

__all__ = ["MAX_QUESTION_CHARS", "Conversation", "WebApp", "build_app", "launch"]
