"""``xke serve``: an OpenAI-compatible HTTP server over xke's edit memory.

Edit once (``POST /v1/edits``, in any language), ask in any language
(``POST /v1/chat/completions``): each question retrieves the stored edits
above the threshold, reads them through the X-KDE prompt, and the answer
lists the edits it used (``edits_used``: ids and scores). Retire
(``DELETE /v1/edits/{id}``) or roll back (``POST /v1/edits/rollback``) and
the next answer no longer uses them. The memory is the SQLite edit store
(:mod:`xke.memory.store`); every change is audited in it.

Modules: :mod:`.memory` (the memory interface), :mod:`.generation` (engines
and the batcher), :mod:`.service` (retrieval + prompt + generation),
:mod:`.app` (the FastAPI routes), :mod:`.runner` (assembling and running),
:mod:`.commands` (the CLI). Only this package needs FastAPI and uvicorn
(``pip install "xke[serve]"``); ``xke --help`` works without them.
"""
