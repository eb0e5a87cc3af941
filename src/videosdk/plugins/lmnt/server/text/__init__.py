"""The text front-end of the local server: what a caller wrote turned into what is said.

:mod:`.markup` (Markdown and SSML), :mod:`.lexicon` (pronunciations), the normaliser
(:mod:`.normalize`, when installed) and :mod:`.frontend` (the engine wrapper the server speaks
through, which also maps word timings back to the caller's words).
"""
