"""The client: control session, media engine, events for user interfaces."""
