"""Mount your own model behind the OpenAI, Anthropic and Gemini endpoints.

Run:  rawsse serve examples.custom_model:app
Try:  curl -N http://127.0.0.1:8000/v1/chat/completions -H 'Authorization: Bearer sk-local' \\
        -H 'Content-Type: application/json' \\
        -d '{"model": "shout", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import rawsse
from rawsse import App
from rawsse.chat import ChatRequest, Finish, Usage, mount_chat


async def shout(request: ChatRequest) -> AsyncIterator[str | Finish | Usage]:
    """Answer the last user message in capitals, one word at a time."""
    words = request.last_user_text().upper().split()
    limit = request.max_tokens if request.max_tokens is not None else len(words)
    for word in words[:limit]:
        yield word + " "
        await rawsse.sleep(0.01)  # a client that leaves cancels the model right here
    yield Finish("length" if limit < len(words) else "stop")
    yield Usage(prompt_tokens=request.prompt_tokens(), completion_tokens=min(limit, len(words)))


app = App()
mount_chat(app, {"shout": shout}, api_keys=["sk-local"])
