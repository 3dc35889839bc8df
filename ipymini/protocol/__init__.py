"""The Jupyter protocol's machinery: the wire format, request records and the sockets' threads.

Owns: signing and (de)serializing messages (`wire`), what a well-formed request is and the reply
contents every handler shares (`messages`), the five sockets, the heartbeat and who reads which socket
(`sockets`), the thread that serves a group of sockets behind one lock (`channel_thread`), putting an
IOPub source on the iopub socket (`iopub_outlet`), the hot path's socket calls (`zmq_calls`),
registering the kernel's ports with its launcher (`handshake`, protocol 5.6) and jupyter_client's
Session API over the wire code for `kernel.session` (`session`).
The protocol version the kernel speaks is `PROTOCOL_VERSION` here (the package root re-exports it).
Must not import: IPython, ipymini (except ipymini.settings). It is the bottom layer; `ipymini.settings`
imports nothing of ipymini.
"""

PROTOCOL_VERSION = "5.6"  # 5.5: subshells (JEP 91), kernel_info on control; 5.6: kernel handshake (JEP 66)
