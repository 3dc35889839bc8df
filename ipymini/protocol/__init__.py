"""The Jupyter protocol's machinery: the wire format, request records and the sockets' threads.

Owns: signing and (de)serializing messages (`wire`), what a well-formed request is and the reply
contents every handler shares (`messages`), the five sockets, the heartbeat and who reads which socket
(`sockets`), and the thread that serves a group of sockets behind one lock (`channel_thread`).
Must not import: IPython, or anything of ipymini outside this package (it is the bottom layer) but
`ipymini.settings`, which imports nothing of ipymini.
"""
