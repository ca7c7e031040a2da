import sys

from dynamo_hooks.cli import main

sys.exit(main())
