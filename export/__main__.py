"""``python -m export``: the exporter (export/cli.py; also the ``resnet-export`` command)."""

import sys

from export.cli import main

sys.argv[0] = "python -m export"  # for --help and errors, instead of __main__.py

raise SystemExit(main())
