"""`python tests/status_spy.py ARGS...` runs `tlexport ARGS` in this process, appending every status
line its progress display is given to the file $TLEXPORT_STATUS_SPY (one per line): what a test
reads when the command must run in a real process (the converters' C++ writes to the file
descriptors, which click's CliRunner cannot capture) and its status lines are checked too."""

import os

from tlexport.cli import main, status

_real = status.StatusLine.__call__


def _spy(self, line):
    with open(os.environ["TLEXPORT_STATUS_SPY"], "a", encoding="utf-8") as f:
        f.write(str(line).replace("\n", " ") + "\n")
    _real(self, line)


if __name__ == "__main__":
    status.StatusLine.__call__ = _spy
    main()
