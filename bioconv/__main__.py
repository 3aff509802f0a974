import sys

from bioconv.cli import main

sys.exit(main())
