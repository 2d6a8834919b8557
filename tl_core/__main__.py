import sys

from tl_core.cli.main import main

sys.exit(main())
