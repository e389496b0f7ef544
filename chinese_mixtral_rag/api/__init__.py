"""The HTTP API, a face: ``cmrag serve``, OpenAI-compatible, over the same QA chain as the web app
and the CLI.

``app.py`` has the routes, ``schemas.py`` the bodies (OpenAI's shapes plus our extensions),
``gate.py`` the bounded generation queue. FastAPI is imported only here; nothing but the command
line imports this face.
"""
