"""`python -m protocol > static/protocol.js`: print the viewer's copy of the protocol."""

import sys

from protocol.js import render

sys.stdout.write(render())
