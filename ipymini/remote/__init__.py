"""Running ipymini on a cluster managed by Jupyter Enterprise Gateway.

Enterprise Gateway (EG) starts a remote kernel by running a *launcher* on the target host (over SSH,
in a YARN container, a Docker container or a Kubernetes pod). The launcher's contract, as EG's own
Python launcher implements it:

1. pick the kernel's five ZMQ ports and a *communication port* (inside `--port-range`, if one is set);
2. start the kernel on those ports;
3. send the connection information, plus `pid`, `pgid`, `comm_port` and `kernel_id`, to
   `--response-address`, encrypted: AES-128 (ECB, PKCS#7 padding) with a random key, that key
   encrypted with `--public-key` (RSA, PKCS#1 v1.5), all in a base64 JSON envelope (`payload.py`);
4. listen on the communication port for `{"signum": n}` (0 is EG's liveness poll) and
   `{"shutdown": 1}` (`listener.py`).

`python -m ipymini.remote --kernel-id ID --response-address IP:PORT --public-key KEY
[--port-range LO..HI]` does all four (`launcher.py`); the kernel runs as a child process.
Encryption needs `pycryptodomex` (`pip install 'ipymini[gateway]'`); nothing else in ipymini does.

Must not import: IPython, zmq, ipymini (except ipymini.settings). The launcher starts the kernel as a
child process and stays small.
"""
