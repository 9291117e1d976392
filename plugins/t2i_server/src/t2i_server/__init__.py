"""``t2i serve``: the A1111 ``/sdapi/v1`` API, a native job API and a web page (any family).

Modules: :mod:`.settings` (bind and auth rules), :mod:`.cache` (LRU model cache),
:mod:`.jobs` (the job queue and its one worker thread), :mod:`.images` (base64, PNG with
infotext, previews), :mod:`.a1111` and :mod:`.native` (the routes), :mod:`.app` (the
FastAPI application and its middleware), :mod:`.plugin` (the command).
"""

__version__ = "0.1.0"
