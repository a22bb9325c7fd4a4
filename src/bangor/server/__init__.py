"""The server: control listener, UDP relay, room registry, SQL store."""
