"""``ggufkit serve``: an OpenAI-compatible HTTP server (docs/SERVE.md).

    protocol.py   request validation and the OpenAI / llama-server response shapes (no web imports)
    engine.py     the scheduler: ``--parallel`` slots, each with its own KV cache, stepped by one thread
    app.py        the Starlette routes and ``serve()`` (uvicorn); imported only when ``serve`` runs

Starlette and uvicorn come with the ``[serve]`` extra; nothing here imports them at package import.
"""
