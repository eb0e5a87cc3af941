"""``Pipeline`` settings that leave reading and sentence cutting to the LMNT server.

The framework's defaults rewrite the LLM's text before a TTS sees it, and they were made for
providers that read text literally:

* its text filter verbalises money its own way ("$5.50" becomes "five point five zero
  dollars"; with an English STT also "555-123-4567" becomes "five hundred fifty-five-one
  hundred twenty-three-…"), which the server's text front-end would have read as meant
  ("five dollars and fifty cents"); and it holds the text after the last whitespace, so a
  period streamed alone waits for the LLM's next delta;
* its sentence chunker hands a sentence over only when the next delta arrives (it must see
  past the period), one token later (25 ms at 40 tokens/s, a whole tool call when the LLM
  pauses).

The local server does both jobs itself: its front-end reads written forms, Markdown and SSML
tags, and it starts a sentence the moment its end mark arrives.  Built with these options the
plugin sends the LLM's deltas as they are.  What the framework's filter did that the server
does not: it drops fenced code blocks and inline code (the server reads them) and LLM
metadata in parentheses.
"""

from __future__ import annotations

from typing import Any

__all__ = ["pipeline_options"]


def pipeline_options() -> dict[str, Any]:
    """Keyword arguments for ``Pipeline(...)``: ``text_filtering=False, text_chunking=False``.

    ``Pipeline(stt=..., llm=..., tts=LMNTTTS(...), **pipeline_options())``.  A function, not a
    constant, so that a later version can hand out a fresh stateful filter per pipeline.
    """
    return {"text_filtering": False, "text_chunking": False}
