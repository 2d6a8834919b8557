import sys

from tl_core.cli.parser import main

sys.exit(main())
