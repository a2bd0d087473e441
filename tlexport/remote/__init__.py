"""Run parity, bench and predict on the device the app runs on (`--on TARGET`): a torch-free
agent is shipped over ssh (the system OpenSSH client) or through a command prefix (a venv, an
emulated ARM root, a container) with the files and inputs, runs there, reports JSON back; the
host keeps the PyTorch reference and the gates, and records the device's results in the
export's manifest. docs/devices.md is the user's page.

- target: the `--on` syntax and the command lines (ssh options: batch mode, strict host keys).
- session: the boot code, shipping, events, timeouts and cleanup on the target.
- agent: the torch-free code that runs there (stdlib + numpy + the runtime; Python 3.8+).
- run: one agent run, and one line for each way it can fail.
- verify: parity/bench/predict on a target through the host's reference and gates.
- record: per-device results and the fastest verified file per device in manifest.json.
"""
