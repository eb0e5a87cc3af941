"""From engine PCM to the bytes a client asked for: the encoders (mp3, webm, aac, ...), the
process pool that keeps them off the event loop, and a session's timed audio stream."""
