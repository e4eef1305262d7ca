import sys

from gdpw.cli.main import main

sys.exit(main())
