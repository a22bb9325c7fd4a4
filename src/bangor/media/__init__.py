"""The client's sans-I/O media session: datagrams, captured frames and ``now`` in;
datagrams, played frames, peer messages, events and timers out."""
