"""Structured output and tool calls for the chat model: what the prompt says, what the
grammar enforces, and the calls parsed back (LangChain side; the backends only get a schema)."""
