"""Audio: Opus codec, jitter buffer, mixer (pure); devices.py alone touches files and cards."""
