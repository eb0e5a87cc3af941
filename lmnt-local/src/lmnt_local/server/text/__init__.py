"""The text front-end: what the server makes of a caller's text before an engine speaks it
(sentences, clauses and words today)."""
