"""`python -m relay.tools.loadgen`: see relay.tools.loadgen.command."""

import sys

from relay.tools.loadgen.command import main

sys.exit(main())
