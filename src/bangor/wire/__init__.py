"""Sans-I/O wire formats: framing, Noise session, control messages, media packets."""
