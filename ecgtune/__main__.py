import sys

from ecgtune.cli import main

sys.exit(main())
