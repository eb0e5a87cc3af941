"""The server's doors: the LMNT WebSocket session, LMNT's HTTP API (speech, voices, account), the
playground, and the error shapes each API version answers with."""
